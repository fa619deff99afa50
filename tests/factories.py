"""Tiny, trained, deterministic run and model directories for tests.

`make_run_dir` writes what `fedkb train` writes (the run-directory contract
of the team brief), but trains centrally with plain Keras for a few seconds
so that predictions are meaningful and stable; its summary.json says so
(rounds 0, a "note"). `make_model_dir` then exports it with the real
`fedkb export` code. Tests of other areas (the keyboard app) reuse these.

Without `corpus_texts`, the text comes from `synthetic_texts`: a small
language in which the next word depends only on the previous word's class
(words are dealt into classes round-robin; the next class is fixed and the
word inside a class follows a steep geometric law), so a model with a
16-dimensional embedding learns it and its top-3 words are well separated.

Use from a test module (pytest puts `tests/` on sys.path):

    from factories import make_model_dir, tiny_model_dir  # noqa: F401 (a fixture)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from datasets.tokenizer import normalize, tokenize
from datasets.vocab import PAD_ID, RESERVED_TOKENS, Vocabulary

TINY_MODEL = {"embedding_dim": 16, "lstm_units": 32, "seq_len": 20}


def common_words(n: int = 300) -> list[str]:
    """The n most frequent English words (wordfreq), letters and apostrophes only."""
    import wordfreq

    words = [w for w in wordfreq.top_n_list("en", n * 3) if w.replace("'", "").isalpha()]
    return words[:n]


def synthetic_texts(words: Sequence[str], n_texts: int, *, seed: int = 0, classes: int = 8,
                    decay: float = 0.55) -> list[str]:
    """`n_texts` one- or two-sentence texts of the class language described above."""
    rng = np.random.default_rng(seed)
    members = [list(words[c::classes]) for c in range(classes)]
    weights = [decay ** np.arange(len(m)) for m in members]
    weights = [w / w.sum() for w in weights]

    def sentence() -> str:
        c, out = 0, []
        for _ in range(int(rng.integers(4, 10))):
            out.append(members[c][rng.choice(len(members[c]), p=weights[c])])
            c = (c + 1) % classes
        return " ".join(out) + "."

    return [" ".join(sentence() for _ in range(int(rng.integers(1, 3)))) for _ in range(n_texts)]


def training_windows(texts: Sequence[str], vocab: Vocabulary, seq_len: int) -> np.ndarray:
    """int32 [N, T+1] windows, per the brief's data contract (left-padded, stride T)."""
    windows = []
    for text in texts:
        ids = vocab.encode(tokenize(text))
        starts = range(0, max(len(ids) - 1, 1), seq_len)
        for start in starts:
            chunk = ids[start:start + seq_len + 1]
            if len(chunk) >= 2:
                windows.append([PAD_ID] * (seq_len + 1 - len(chunk)) + chunk)
    return np.array(windows, dtype=np.int32).reshape(-1, seq_len + 1)


def make_run_dir(path: str | Path, *, vocab_words: list[str], corpus_texts: list[str] | None = None,
                 seed: int = 0, embedding_dim: int = TINY_MODEL["embedding_dim"],
                 lstm_units: int = TINY_MODEL["lstm_units"], seq_len: int = TINY_MODEL["seq_len"],
                 epochs: int = 25, batch_size: int = 32, learning_rate: float = 0.02) -> Path:
    """A trained run directory at `path` (created) with a vocabulary of `vocab_words`."""
    import tensorflow as tf

    from models.metrics import MaskedLoss, TokenLoss, TopKAccuracy
    from models.next_word import ModelConfig, build_model

    started = time.perf_counter()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = [normalize(w) for w in vocab_words]
    vocab = Vocabulary.from_words(words, size=len(RESERVED_TOKENS) + len(words))
    texts = list(corpus_texts) if corpus_texts is not None else synthetic_texts(
        vocab.tokens[len(RESERVED_TOKENS):], 600, seed=seed)
    heldout_texts = texts[-max(1, len(texts) // 10):] if len(texts) > 1 else texts
    train_texts = texts[:len(texts) - len(heldout_texts)] or texts

    config = ModelConfig(vocab_size=len(vocab), seq_len=seq_len, embedding_dim=embedding_dim,
                         lstm_units=lstm_units)
    tf.keras.utils.set_random_seed(seed)
    model = build_model(config, seed=seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=MaskedLoss(),
                  metrics=[TokenLoss(), TopKAccuracy(1), TopKAccuracy(3)])
    train = training_windows(train_texts, vocab, seq_len)
    if len(train) == 0:
        raise ValueError("corpus_texts hold no tokens to train on")
    model.fit(train[:, :-1], train[:, 1:], batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=0)
    heldout = training_windows(heldout_texts, vocab, seq_len)
    scores = model.evaluate(heldout[:, :-1], heldout[:, 1:], batch_size=256, verbose=0,
                            return_dict=True)
    model.save_weights(str(path / "final_model.weights.h5"))
    vocab.save(path / "vocab.json")

    train_settings = {"method": "central Keras training (tests/factories.py), not federated",
                      "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                      "seed": seed}
    (path / "config.json").write_text(json.dumps({
        "model": config.to_json(), "train": train_settings,
        "data": {"dir": None, "vocab_sha256": vocab.sha256}}, indent=1))
    summary = {
        "rounds": 0, "clients_per_round": 0, "training_clients": 0, "clients_seen": 0,
        "examples": int(len(train)),
        "corpus": {"name": "given texts" if corpus_texts is not None else "synthetic class language",
                   "clients": 0, "texts": len(texts),
                   "tokens": sum(len(tokenize(t)) for t in texts)},
        "dp": None, "secure_aggregation": False, "compression": False,
        "final_metrics": {"heldout": {
            "top1_accuracy": float(scores["top1_accuracy"]),
            "top3_accuracy": float(scores["top3_accuracy"]),
            "token_loss": float(scores["token_loss"]),
            "perplexity": float(np.exp(scores["token_loss"]))}},
        "wall_time_s": round(time.perf_counter() - started, 2),
        "upload_bytes_per_client_per_round": 0.0,
        "vocab_sha256": vocab.sha256,
        "note": "trained centrally for tests by tests/factories.py; no federated rounds",
    }
    (path / "summary.json").write_text(json.dumps(summary, indent=1))
    return path


def make_model_dir(path: str | Path, *, quantize: bool = True, run_dir: str | Path | None = None,
                   **run_kw) -> Path:
    """An exported model directory at `path`; trains a run next to it unless `run_dir` is given."""
    from fl_pipeline.export import export_run

    path = Path(path)
    if run_dir is None:
        run_dir = make_run_dir(path.with_name(path.name + "-run"), **run_kw)
    return export_run(run_dir, path, quantize=quantize)


# -- pytest fixtures shared by test files (import them into a test module) ------
#
# Session-scoped and cached under pytest's base temp directory, so every test
# file that imports them trains and exports once per session. Each directory's
# last-written file marks it complete.

TINY_WORDS = 300


def _cached_dir(tmp_path_factory, name: str, complete_marker: str, build) -> Path:
    path = tmp_path_factory.getbasetemp() / name
    if not (path / complete_marker).exists():
        build(path)
    return path


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A trained run directory (300 common English words, the synthetic class language)."""
    return _cached_dir(tmp_path_factory, "fedkb-tiny-run", "summary.json",
                       lambda path: make_run_dir(path, vocab_words=common_words(TINY_WORDS)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_run_dir) -> Path:
    """`tiny_run_dir` exported with the default dynamic-range quantization."""
    return _cached_dir(tmp_path_factory, "fedkb-tiny-model", "model_card.json",
                       lambda path: make_model_dir(path, run_dir=tiny_run_dir))


@pytest.fixture(scope="session")
def tiny_float_model_dir(tmp_path_factory, tiny_run_dir) -> Path:
    """`tiny_run_dir` exported with `--float`."""
    return _cached_dir(tmp_path_factory, "fedkb-tiny-model-float", "model_card.json",
                       lambda path: make_model_dir(path, run_dir=tiny_run_dir, quantize=False))
