"""The model directory's contract: what `fedkb export` writes and the app reads.

File names, the card's format, the TFLite signatures with their tensors'
dtypes and shapes, and the personal layer's tensors. The exporter (server
side, `fl_pipeline/export.py`) and the checker (device side,
`keyboard_app/model_dir.py`) both import this module, so neither imports the
other and the two cannot drift. Pure Python.
"""

from __future__ import annotations

import hashlib

from datasets.vocab import VOCAB_FILE  # noqa: F401 - part of the contract: the model directory's vocabulary

MODEL_FILE = "model.tflite"
CARD_FILE = "model_card.json"
CARD_FORMAT = "fedkb-model-dir"
CARD_FORMAT_VERSION = 1

# A TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"

SIGNATURES = ("suggest", "train", "get_personal", "set_personal")
PERSONAL_TENSORS = ("bias", "adapter_down", "adapter_up")

# A tensor's description in the card: [dtype name, shape].
TensorSpec = tuple[str, tuple[int, ...]]


def expected_signatures(*, context_len: int, train_batch_size: int, vocab_size: int,
                        embedding_dim: int, adapter_rank: int) -> dict[str, dict[str, dict[str, TensorSpec]]]:
    """signature -> {"inputs": {name: (dtype, shape)}, "outputs": {...}}: the export's contract."""
    T, B, V, E, r = context_len, train_batch_size, vocab_size, embedding_dim, adapter_rank
    personal = {"bias": ("float32", (V,)), "adapter_down": ("float32", (E, r)),
                "adapter_up": ("float32", (r, V))}
    return {
        "suggest": {"inputs": {"context": ("int32", (1, T))},
                    "outputs": {"logprobs": ("float32", (1, V))}},
        "train": {"inputs": {"context": ("int32", (B, T)), "target": ("int32", (B,))},
                  "outputs": {"loss": ("float32", ())}},
        "get_personal": {"inputs": {}, "outputs": personal},
        "set_personal": {"inputs": personal, "outputs": personal},
    }


def sha256_file_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
