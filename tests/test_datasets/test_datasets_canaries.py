"""Canaries planted by `fedkb data prepare --canaries` for the memorization audit (no TensorFlow)."""

import json
import sqlite3

import pytest

from datasets.canaries import CanaryError, CanarySet, canary_text
from datasets.examples import encode_text, windows
from datasets.prepare import PrepareConfig, prepare
from datasets.store import ClientStore, serialize_tokens
from datasets.vocab import Vocabulary
from fl_pipeline.cli import main

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]


def make_jsonl(path, num_clients=20):
    lines = []
    for c in range(num_clients):
        for t in range(1 + c % 4):
            words = [WORDS[(c * 5 + t * 3 + k) % len(WORDS)] for k in range(3 + (c + t) % 7)]
            lines.append(json.dumps({"client_id": f"u{c:03d}", "text": " ".join(words) + "."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(corpus, out, **overrides):
    values = dict(corpus=str(corpus), out=out, vocab_size=5000, seq_len=10, seed=3,
                  canaries=2, canary_repeats=(1, 5))
    values.update(overrides)
    return PrepareConfig(**values)


def client_windows(out, client):
    with sqlite3.connect(out / "clients.sqlite") as db:
        return [row[0] for row in db.execute(
            "SELECT serialized_example_proto FROM examples WHERE client_id = ? AND split_name = "
            "'train' ORDER BY rowid", (client,))]


def test_canaries_go_to_distinct_training_clients_as_often_as_asked(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    stats = prepare(config(corpus, tmp_path / "out")).stats
    planted = CanarySet.load(tmp_path / "out" / "canaries.json")
    assert sorted(c.repeats for c in planted.canaries) == [1, 1, 5, 5]
    assert planted.candidates == 100_000 and all(len(c.secret) == 5 for c in planted.canaries)
    clients = [c.client_id for c in planted.canaries]
    train = ClientStore(tmp_path / "out").client_ids("train")
    assert len(set(clients)) == 4 and set(clients) <= set(train)
    assert len({c.secret for c in planted.canaries}) == 4
    vocab = Vocabulary.load(tmp_path / "out" / "vocab.json")
    for canary in planted.canaries:
        window = serialize_tokens(windows(encode_text(canary.text, vocab), 10)[0])
        stored = client_windows(tmp_path / "out", canary.client_id)
        assert stored.count(window) == canary.repeats
        assert canary.text == canary_text(canary.secret) == f"my pin number is {' '.join(canary.secret)}"
    assert stats["canaries"] == {"count": 4, "copies": 12, "repeats": [1, 5], "digits": 5,
                                 "file": "canaries.json"}
    assert stats["splits"]["train"]["texts"] == 12 + sum(
        1 + c % 4 for c in range(20) if f"u{c:03d}" in train)


def test_the_same_seed_plants_the_same_canaries_and_none_leaves_no_record(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    prepare(config(corpus, tmp_path / "a"))
    prepare(config(corpus, tmp_path / "b"))
    assert (tmp_path / "a" / "canaries.json").read_bytes() == (tmp_path / "b" / "canaries.json").read_bytes()
    assert (tmp_path / "a" / "clients.sqlite").read_bytes() == (tmp_path / "b" / "clients.sqlite").read_bytes()
    stats = prepare(config(corpus, tmp_path / "a", canaries=0), force=True).stats
    assert not (tmp_path / "a" / "canaries.json").exists() and stats["canaries"] is None


@pytest.mark.parametrize("overrides, message", [
    ({"canaries": 20}, "need as many training clients"),
    ({"vocab_size": 400}, "canary words 0, pin are not in the vocabulary"),
    ({"seq_len": 8}, "use --seq-len 10 or more"),
    ({"canary_digits": 7}, "--canary-digits must be between 1 and 6"),
])
def test_canaries_that_cannot_work_are_refused(tmp_path, overrides, message):
    with pytest.raises(CanaryError, match=message):
        prepare(config(make_jsonl(tmp_path / "c.jsonl"), tmp_path / "out", **overrides))


def test_the_cli_plants_canaries_and_says_where_the_secrets_are(tmp_path, capsys):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    assert main(["data", "prepare", "--corpus", str(corpus), "--out", str(tmp_path / "out"),
                 "--vocab-size", "5000", "--seq-len", "12", "--canaries", "1",
                 "--canary-repeats", "2,3", "--heldout-fraction", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "canaries: 2 planted (5 copies, repeats 2, 3" in out and "canaries.json" in out


def test_a_bad_repeat_list_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--canaries", "1", "--canary-repeats", "2,zero"])
    assert exit_info.value.code == 2


def test_a_damaged_canary_record_is_a_clear_error(tmp_path):
    path = tmp_path / "canaries.json"
    path.write_text('{"format": "fedkb-canaries/1", "prefix": "my pin number is", "digits": 5, '
                    '"seed": 0, "canaries": [{"secret": "12", "repeats": 1, "client_id": "a"}]}')
    with pytest.raises(CanaryError, match="not 5 digits"):
        CanarySet.load(path)
    with pytest.raises(CanaryError, match="--canaries"):
        CanarySet.load(tmp_path / "missing.json")
