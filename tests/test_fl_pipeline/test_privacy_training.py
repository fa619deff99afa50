"""Privacy properties of federated training, as tests that can fail.

- Client text is read only inside client computations: the server-side
  program (the Python driver) trains against a copy of the client store
  whose `examples` table is a tripwire that fails any read, while a TFF
  worker started elsewhere holds the real store; training must still see
  the clients' examples.
- Nothing the run writes (checkpoints, metrics, TensorBoard, weights,
  summary, logs) nor the exported model holds client text: a byte scan for
  unique planted sentences, as text and as token ids.
- Memorization (Secret Sharer exposure, `fedkb audit`): a canary typed 32
  times by one user is exposed without differential privacy and is not with
  strong DP noise.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_helpers import fedkb, write_corpus

# Tiny, but enough for the model to memorize a secret typed 32 times: plain FedAvg
# (server SGD at 1.0, client updates not bounded), 5 local epochs. 12 clients per round allow DP noise 1.0
# (TFF's adaptive clipping needs more than 10 x the noise multiplier).
TRAIN_FLAGS = ["--rounds", "12", "--clients-per-round", "12", "--local-epochs", "5",
               "--embedding-dim", "16", "--lstm-units", "32", "--batch-size", "8",
               "--client-lr", "1.0", "--server-optimizer", "sgd", "--server-lr", "1.0",
               "--eval-every", "6", "--checkpoint-every", "6", "--seed", "0"]
PLAIN_FEDAVG = ["--no-update-clipping"]  # the default bound alone lowers exposure (README)
STRONG_DP = ["--dp-noise-multiplier", "1.0"]
TRIPWIRE = "client text read outside a client computation"


def tripwire_copy(data_dir: Path, to: Path) -> Path:
    """The server's view of a client store: who the clients are and how many examples
    they hold, but an `examples` table that fails every read (SQLite raises on json())."""
    to.mkdir(parents=True)
    for name in ("stats.json", "vocab.json", "clients.sqlite"):
        shutil.copy(data_dir / name, to / name)
    db = sqlite3.connect(to / "clients.sqlite")
    db.executescript(f"""
        DROP TABLE examples;
        CREATE VIEW examples AS SELECT split_name, client_id,
            json('{TRIPWIRE}') AS serialized_example_proto FROM client_metadata;
        VACUUM;""")
    db.close()
    return to


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> tuple[Path, Path]:
    """(phones, server): two working directories that both hold `data/`, the prepared
    store with canaries on the phones' side and its tripwire copy on the server's."""
    root = tmp_path_factory.mktemp("privacy")
    phones, server = root / "phones", root / "server"
    phones.mkdir()
    corpus = write_corpus(root / "corpus.jsonl")
    fedkb("data", "prepare", "--corpus", corpus, "--out", phones / "data", "--vocab-size", "5000",
          "--seq-len", "12", "--heldout-fraction", "0.25", "--seed", "1",
          "--canaries", "3", "--canary-repeats", "32")
    tripwire_copy(phones / "data", server / "data")
    return phones, server


@pytest.fixture(scope="module")
def plain_run(sites) -> Path:
    """Trained without DP by a driver in the server's directory, on a TFF worker in the phones'."""
    import portpicker

    from fl_pipeline.training.runtime import WORKER_BINARY, stop_worker

    phones, server = sites
    port = portpicker.pick_unused_port()
    worker = subprocess.Popen([str(WORKER_BINARY), f"--port={port}"], cwd=phones,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "train", "--data", "data",
                              "--out", "run", "--workers", f"localhost:{port}", *TRAIN_FLAGS,
                              *PLAIN_FEDAVG],
                             cwd=server, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    finally:
        stop_worker(worker)
    assert out.returncode == 0, out.stderr[-3000:]
    return server / "run"


@pytest.fixture(scope="module")
def dp_run(sites, tmp_path_factory) -> Path:
    phones, _ = sites
    run_dir = tmp_path_factory.mktemp("dp") / "run"
    out = fedkb("train", "--data", phones / "data", "--out", run_dir, *TRAIN_FLAGS, *STRONG_DP)
    (run_dir.parent / "train.stdout").write_text(out.stdout)
    return run_dir


def test_a_dp_run_reports_its_privacy_budget(dp_run):
    dp = json.loads((dp_run / "summary.json").read_text())["dp"]
    assert dp["noise_multiplier"] == 1.0 and 0 < dp["epsilon"] < 1e3 and 0 < dp["delta"] < 1
    printed = (dp_run.parent / "train.stdout").read_text()
    assert f"differential privacy: epsilon {dp['epsilon']:.2f}" in printed


def test_the_tripwire_store_fails_every_read_of_client_text(sites):
    _, server = sites
    db = sqlite3.connect(server / "data" / "clients.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="malformed JSON"):
        db.execute("SELECT serialized_example_proto FROM examples").fetchall()
    assert db.execute("SELECT COUNT(*) FROM client_metadata").fetchone()[0] > 0
    db.close()
    # ... and so does TensorFlow's reader, the one client computations use.
    from datasets.store import ClientStore

    client_data = ClientStore(server / "data").client_data("train")
    with pytest.raises(Exception, match="malformed JSON"):
        list(client_data.create_tf_dataset_for_client(client_data.client_ids[0]))


def test_client_text_is_read_only_inside_client_computations(plain_run):
    summary = json.loads((plain_run / "summary.json").read_text())
    assert summary["examples"] > 0  # the clients trained on their text, on the worker
    assert summary["final_metrics"]["heldout"]["tokens"] > 0  # and were evaluated there
    assert summary["clients_seen"] == summary["training_clients"]


def needles(phones: Path) -> dict[str, bytes]:
    """Unique client text (canaries and ordinary sentences) as text and as token ids."""
    from datasets.canaries import CanarySet
    from datasets.examples import encode_text
    from datasets.store import serialize_tokens
    from datasets.vocab import Vocabulary

    vocab = Vocabulary.load(phones / "data" / "vocab.json")
    canaries = CanarySet.load(phones / "data" / "canaries.json").canaries
    texts = [c.text for c in canaries] + ["the rain fell on the town .", "we ate bread and cheese ."]
    found = {}
    for text in texts:
        ids = encode_text(text, vocab)
        found[f"{text!r} as text"] = text.encode("utf-8")
        found[f"{text!r} as int32 ids"] = np.array(ids, "<i4").tobytes()
        found[f"{text!r} as int64 ids"] = np.array(ids, "<i8").tobytes()
        # the packed varints of the store's tf.train.Example (without its length prefix)
        found[f"{text!r} as stored ids"] = serialize_tokens(ids)[-len(ids) - sum(i > 127 for i in ids):]
    for canary in canaries:
        found[f"secret {canary.secret} as typed"] = " ".join(canary.secret).encode()
    return found


def leaks(root: Path, patterns: dict[str, bytes]) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blob = path.read_bytes()
        found += [f"{path.relative_to(root)}: {name}" for name, needle in patterns.items()
                  if needle in blob or needle.lower() in blob.lower()]
    return found


def test_nothing_the_run_writes_nor_the_exported_model_holds_client_text(sites, plain_run, tmp_path):
    phones, _ = sites
    patterns = needles(phones)
    # The scan finds what is there: the store holds the ids, canaries.json the text.
    in_store = leaks(phones / "data", patterns)
    assert any("as stored ids" in hit and "clients.sqlite" in hit for hit in in_store)
    assert any("canaries.json" in hit and "as text" in hit for hit in in_store)

    model_dir = tmp_path / "model"
    fedkb("export", plain_run, "--out", model_dir)
    scanned = sorted(p.name for p in plain_run.rglob("*") if p.is_file())
    assert {"COMPLETE", "metrics.csv", "final_model.weights.h5", "summary.json"} <= set(scanned)
    assert any(name.startswith("events.out.tfevents") for name in scanned)
    assert leaks(plain_run, patterns) == []
    assert leaks(model_dir, patterns) == []


def test_a_secret_typed_32_times_is_exposed_without_dp_and_not_with_strong_dp(
        sites, plain_run, dp_run):
    from fl_pipeline.evaluation.audit import audit_run

    phones, _ = sites
    out = fedkb("audit", plain_run, "--data", phones / "data")
    plain = json.loads((plain_run / "audit.json").read_text())
    assert "exposure" in out.stdout and "100,000 candidates" in out.stdout
    for row in plain["canaries"]:
        assert row["secret"] in out.stdout
        assert row["repeats"] == row["copies_in_training"] == 32 and row["rounds_in_training"] > 0
    private = audit_run(dp_run)
    assert private["training"]["dp"]["noise_multiplier"] == 1.0

    def mean_exposure(report):
        return float(np.mean([row["exposure_bits"] for row in report["canaries"]]))

    # Chance is 1.44 bits; 16.6 bits is a secret ranked first of 100,000.
    assert mean_exposure(plain) > 8
    assert mean_exposure(plain) > mean_exposure(private) + 4
    assert plain["controls"]["mean_exposure_bits"] < 3


def test_auditing_a_run_without_canaries_says_how_to_plant_them(plain_run):
    out = fedkb("audit", plain_run, check=False)  # its own data dir: the server's, no canaries
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("fedkb audit: error: ")
    assert "canaries.json: not found" in out.stderr and "--canaries" in out.stderr


def test_the_exposure_search_agrees_with_the_model_itself(sites, plain_run):
    """Exact enumeration uses a digit tree with one LSTM step per node; it must give the
    Keras model's own log-probabilities of whole sentences."""
    from datasets.canaries import CanarySet, canary_text
    from datasets.examples import encode_text
    from fl_pipeline.evaluation.audit import secret_logprobs, sequence_logprob
    from fl_pipeline.run_dir import load_finished_run

    phones, _ = sites
    model, vocab, _, _ = load_finished_run(plain_run)
    canaries = CanarySet.load(phones / "data" / "canaries.json")
    scores = secret_logprobs(model, vocab, canaries, seq_len=12)
    assert scores.shape == (100_000,)
    for secret in [c.secret for c in canaries.canaries] + ["00000", "99999", "31415"]:
        reference = sequence_logprob(model, encode_text(canary_text(secret), vocab), 12)
        assert scores[int(secret)] == pytest.approx(reference, abs=1e-3)
