"""Small corpora and runs for the federated-training tests.

The corpus is real sentences with a simple structure, spread over clients
that each favour their own topic (non-IID, like phones), so a tiny model
learns something within a few rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOPICS = {
    "cats": ["the cat sat on the mat .", "my cat likes warm milk .", "the cat chased the mouse ."],
    "rain": ["the rain fell on the town .", "we stayed home in the rain .", "the rain stopped at noon ."],
    "code": ["the code runs on my phone .", "we fixed the bug in the code .", "the test found the bug ."],
    "food": ["we ate bread and cheese .", "the soup is hot and good .", "i like bread with soup ."],
}
FAST_TRAIN_FLAGS = ["--embedding-dim", "8", "--lstm-units", "16", "--clients-per-round", "4",
                    "--batch-size", "8", "--eval-every", "2", "--checkpoint-every", "2",
                    "--client-lr", "0.5", "--server-lr", "0.05"]


def write_corpus(path: Path, clients: int = 24, texts_per_client: int = 8,
                 extra: dict[str, list[str]] | None = None) -> Path:
    """The topic corpus, plus `extra` clients' texts (client id -> texts)."""
    topics = list(TOPICS)
    with open(path, "w") as f:
        for c in range(clients):
            topic = TOPICS[topics[c % len(topics)]]
            other = TOPICS[topics[(c + 1) % len(topics)]]
            for t in range(texts_per_client):
                sentence = topic[t % len(topic)] if t % 4 else other[t % len(other)]
                f.write(json.dumps({"client_id": f"phone-{c:02d}", "text": sentence}) + "\n")
        for client_id, texts in (extra or {}).items():
            for text in texts:
                f.write(json.dumps({"client_id": client_id, "text": text}) + "\n")
    return path


def fedkb(*args: str, timeout: float = 600, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs the CLI as a user would, in a fresh process (`env`: extra variables)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", *map(str, args)],
                         capture_output=True, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"fedkb {' '.join(map(str, args))} failed:\n{out.stderr[-3000:]}")
    return out


def fault_env(run_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of `fl_pipeline.training.fault_injection`: watch `run_dir`, and
    e.g. kill_at="3:metrics.csv" or stop_after=run_dir / "checkpoints/program_state_2/COMPLETE"."""
    return {"FEDKB_TEST_WATCH_DIR": str(run_dir),
            **{f"FEDKB_TEST_{name.upper()}": str(value) for name, value in settings.items()}}


def prepare_corpus(tmp: Path, extra: dict[str, list[str]] | None = None) -> Path:
    corpus = write_corpus(tmp / "corpus.jsonl", extra=extra)
    data = tmp / "data"
    fedkb("data", "prepare", "--corpus", corpus, "--out", data, "--vocab-from-data",
          "--vocab-size", "64", "--seq-len", "8", "--heldout-fraction", "0.25", "--seed", "1")
    return data
