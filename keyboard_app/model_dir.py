"""Reading and checking a model directory, before anything runs it.

A model directory (written by `fedkb export`) holds `model.tflite`,
`vocab.json` and `model_card.json`. The card records the byte size and
SHA-256 of `model.tflite` and the vocabulary's hash, so a truncated,
corrupted or mismatched directory is refused here, in Python, and never
reaches the native interpreter (a damaged flatbuffer opened from a path has
crashed LiteRT; see docs/DESIGN.md). Pure Python: the app and `fedkb predict`
import this without TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import DEMO_MODEL_DIR, fedkb_command
from datasets.vocab import Vocabulary, VocabularyError
# What `fedkb export` writes and this module checks: one contract, in models/.
from models.contract import (CARD_FILE, CARD_FORMAT, CARD_FORMAT_VERSION, MODEL_FILE,
                             TFLITE_IDENTIFIER, VOCAB_FILE,
                             TensorSpec, expected_signatures, sha256_file_bytes)


class ModelDirError(FedKBError):
    """A model directory that is missing, incomplete, damaged or inconsistent."""


@dataclass(frozen=True)
class ModelDir:
    """A checked model directory: its card, vocabulary and model bytes."""

    path: Path
    card: dict
    vocab: Vocabulary
    model_bytes: bytes

    @property
    def context_len(self) -> int:
        return int(self.card["model"]["context_len"])

    @property
    def train_batch_size(self) -> int:
        return int(self.card["personal_layer"]["train_batch_size"])

    def expected_signatures(self) -> dict[str, dict[str, dict[str, TensorSpec]]]:
        """The signatures `model.tflite` must have, by the card and vocabulary."""
        return expected_signatures(
            context_len=self.context_len, train_batch_size=self.train_batch_size,
            vocab_size=len(self.vocab), embedding_dim=int(self.card["model"]["embedding_dim"]),
            adapter_rank=int(self.card["personal_layer"]["adapter_rank"]))


def reexport(path: Path) -> str:
    """What to do about a missing or broken model directory `path`."""
    if Path(path) == DEMO_MODEL_DIR:
        return f"write it with `{fedkb_command('demo', '--no-app')}`"
    return f"write it with `{fedkb_command('export', 'RUN_DIR', '--out', path)}`"


def _read_card(path: Path) -> dict:
    card_path = path / CARD_FILE
    try:
        card = json.loads(card_path.read_text("utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{card_path}: missing; {reexport(path)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{card_path}: not readable JSON ({e}); {reexport(path)}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelDirError(f"{card_path}: not a FedKB model card; {reexport(path)}")
    if card.get("format_version") != CARD_FORMAT_VERSION:
        raise ModelDirError(
            f"{card_path}: format version {card.get('format_version')!r}, this FedKB reads "
            f"{CARD_FORMAT_VERSION}; re-export the model with this version")
    try:
        for section, key, kind in [("file", "bytes", int), ("file", "sha256", str),
                                   ("vocab", "sha256", str), ("vocab", "size", int),
                                   ("model", "context_len", int), ("model", "embedding_dim", int),
                                   ("personal_layer", "train_batch_size", int),
                                   ("personal_layer", "adapter_rank", int)]:
            if not isinstance(card[section][key], kind):
                raise ModelDirError(f"{card_path}: {section}.{key} should be {kind.__name__}, got "
                                    f"{card[section][key]!r}; {reexport(path)}")
    except (KeyError, TypeError) as e:
        raise ModelDirError(f"{card_path}: field {e} is missing; {reexport(path)}") from None
    return card


def read_model_dir(path: str | Path) -> ModelDir:
    """Reads `path` and checks it is complete and self-consistent.

    Raises `ModelDirError` naming the file at fault and what to do. Loads
    nothing native: the model bytes come back only once their size and
    hash match the card.
    """
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"{path}: model directory not found; {reexport(path)}")
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a directory; pass the directory written by `fedkb export`")
    if not any(path.iterdir()):
        raise ModelDirError(f"{path}: model directory is empty; {reexport(path)}")
    card = _read_card(path)

    model_path = path / MODEL_FILE
    try:
        model_bytes = model_path.read_bytes()
    except FileNotFoundError:
        raise ModelDirError(f"{model_path}: missing; {reexport(path)}") from None
    except OSError as e:
        raise ModelDirError(f"{model_path}: not readable ({e})") from None
    expected_size = card["file"]["bytes"]
    if len(model_bytes) != expected_size:
        raise ModelDirError(
            f"{model_path}: {len(model_bytes)} bytes, the model card says {expected_size}; "
            f"the file is truncated or was replaced, {reexport(path)}")
    if sha256_file_bytes(model_bytes) != card["file"]["sha256"]:
        raise ModelDirError(
            f"{model_path}: sha256 differs from the model card; the file is corrupted or was "
            f"replaced, {reexport(path)}")
    if model_bytes[4:8] != TFLITE_IDENTIFIER:
        raise ModelDirError(f"{model_path}: not a TFLite flatbuffer; {reexport(path)}")

    try:
        vocab = Vocabulary.load(path / VOCAB_FILE)
    except VocabularyError as e:
        raise ModelDirError(f"{e}; {reexport(path)}") from None
    if vocab.sha256 != card["vocab"]["sha256"]:
        raise ModelDirError(
            f"{path / VOCAB_FILE}: vocabulary sha256 {vocab.sha256[:12]}... differs from the "
            f"model card's {str(card['vocab']['sha256'])[:12]}...; the vocabulary belongs to "
            f"another model, {reexport(path)}")
    if len(vocab) != card["vocab"]["size"]:
        raise ModelDirError(f"{path / VOCAB_FILE}: {len(vocab)} tokens, the model card says "
                            f"{card['vocab']['size']}; {reexport(path)}")
    return ModelDir(path=path, card=card, vocab=vocab, model_bytes=model_bytes)
