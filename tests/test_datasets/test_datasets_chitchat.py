"""The chitchat corpus (real typed chat from the chitchat-dataset wheel), the per-client caps and
packing, on a small slice of the installed wheel's own dataset.json."""

import importlib.metadata
import json
import sqlite3

import pytest

from datasets import chitchat
from datasets.corpus import CorpusError, ReadLog
from datasets.examples import encode_text, packed_windows, windows
from datasets.prepare import PrepareConfig, prepare
from datasets.splits import past_count
from datasets.store import serialize_example, serialize_tokens, store_client_id
from datasets.vocab import PAD_ID, Vocabulary
from fl_pipeline.cli import main

CONVERSATIONS = 60


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory):
    """The first conversations of the installed data set, with each conversation's turns
    reversed so that file order is not time order (the reader must sort)."""
    data = json.loads(chitchat.dataset_file().read_bytes())
    picked = {cid: {**conv, "messages": conv["messages"][::-1]}
              for cid, conv in list(data.items())[:CONVERSATIONS]}
    path = tmp_path_factory.mktemp("chitchat") / "dataset.json"
    path.write_text(json.dumps(picked))
    return path, picked


def timelines(picked):
    """sender -> [(timestamp, text)] in time order (ties: file order), empty texts left out."""
    result = {}
    for conv in picked.values():
        for turn in conv["messages"]:
            for m in turn:
                if m["text"].strip():
                    result.setdefault(f"chitchat:{m['sender']}", []).append((m["timestamp"], m["text"]))
    return {c: sorted(t, key=lambda pair: pair[0]) for c, t in result.items()}


@pytest.fixture
def use_slice(real_slice, monkeypatch):
    monkeypatch.setattr(chitchat, "dataset_file", lambda: real_slice[0])
    return real_slice


def test_one_client_per_sender_with_messages_in_timestamp_order(use_slice):
    path, picked = use_slice
    corpus = chitchat.read_chitchat(ReadLog())
    expected = timelines(picked)
    assert corpus.clients == {c: [text for _, text in t] for c, t in expected.items()}
    assert len(corpus.clients) > 10 and corpus.name == "chitchat" and "MIT" in corpus.source


def stored(out, split):
    with sqlite3.connect(out / "clients.sqlite") as db:
        rows = db.execute("SELECT client_id, serialized_example_proto FROM examples WHERE "
                          "split_name = ? ORDER BY rowid", (split,)).fetchall()
    result = {}
    for client, blob in rows:
        result.setdefault(client, []).append(blob)
    return result


def test_heldout_past_precedes_future_and_caps_keep_the_most_recent_texts(use_slice, tmp_path):
    _, picked = use_slice
    config = PrepareConfig(corpus="chitchat", out=tmp_path / "out", vocab_size=2000, seed=0,
                           heldout_fraction=0.3, max_texts_per_client=40, max_future_texts=3)
    stats = prepare(config).stats
    vocab = Vocabulary.load(tmp_path / "out" / "vocab.json")
    timeline = timelines(picked)
    past, future = stored(tmp_path / "out", "heldout_past"), stored(tmp_path / "out", "heldout_future")
    assert past and future
    for client, blobs in past.items():
        kept = timeline[client][-40:]
        cut = past_count(len(kept), 0.8)
        assert blobs == [serialize_tokens(w) for _, t in kept[:cut]
                         for w in windows(encode_text(t, vocab), 20)]
        ahead = kept[cut:cut + 3]  # the first future texts, right after the past
        assert future.get(store_client_id(client), []) == [serialize_tokens(w) for _, t in ahead
                                                   for w in windows(encode_text(t, vocab), 20)]
        assert all(ts_past <= ts for ts_past, _ in kept[:cut] for ts, _ in ahead)
    for client, blobs in stored(tmp_path / "out", "train").items():
        recent = [t for _, t in timeline[client][-40:]]
        assert blobs == [serialize_tokens(w) for t in recent for w in windows(encode_text(t, vocab), 20)]
    caps = stats["caps"]
    over = [c for c, t in timeline.items() if len(t) > 40]
    assert caps["clients_capped"]["train"] + caps["clients_capped"]["heldout"] == len(over) > 0
    assert sum(caps["texts_removed"].values()) == sum(len(timeline[c]) - 40 for c in over)
    assert caps["future_texts_removed"] > 0 and stats["splits"]["heldout_future"]["texts"] <= 3 * len(future)


def test_packing_fills_windows_and_records_each_tokens_message(use_slice, tmp_path):
    plain = prepare(PrepareConfig(corpus="chitchat", out=tmp_path / "a", vocab_size=2000)).stats
    packed = prepare(PrepareConfig(corpus="chitchat", out=tmp_path / "b", vocab_size=2000,
                                   pack="messages")).stats
    assert plain["packing"]["train_padding_fraction"] == packed["packing"]["train_padding_fraction"]
    fractions = packed["packing"]["train_padding_fraction"]
    assert fractions["messages"] < 0.05 < 0.3 < fractions["none"]  # chat: short messages
    assert packed["splits"]["train"]["padding_fraction"] == fractions["messages"]
    assert plain["splits"]["train"]["padding_fraction"] == fractions["none"]
    assert packed["splits"]["train"]["tokens"] == plain["splits"]["train"]["tokens"]
    assert packed["splits"]["train"]["examples"] < 0.7 * plain["splits"]["train"]["examples"]
    assert stored(tmp_path / "b", "heldout_future") == stored(tmp_path / "a", "heldout_future")
    assert packed["packing"]["packed_splits"] == ["train", "heldout_past"]


def test_packed_windows_cover_every_target_once_and_number_messages_per_window():
    messages = [[2, 10, 11, 3], [2, 12, 3], [2, 13, 14, 15, 16, 3]]
    result = packed_windows(messages, seq_len=5)
    assert [w for w, _ in result] == windows([i for m in messages for i in m], 5)
    assert result[0] == ([2, 10, 11, 3, 2, 12], [1, 1, 1, 1, 2, 2])
    assert result[1] == ([12, 3, 2, 13, 14, 15], [1, 1, 2, 2, 2, 2])
    assert result[2] == ([PAD_ID] * 3 + [15, 16, 3], [0, 0, 0, 1, 1, 1])


def test_the_segments_feature_parses_with_tensorflow_next_to_tokens():
    import tensorflow as tf

    blob = serialize_example({"tokens": [0, 2, 10, 3], "segments": [0, 1, 1, 1]})
    spec = {"tokens": tf.io.FixedLenFeature([4], tf.int64)}  # what training reads today
    assert tf.io.parse_single_example(blob, spec)["tokens"].numpy().tolist() == [0, 2, 10, 3]
    features = tf.train.Example.FromString(blob).features.feature
    assert list(features["segments"].int64_list.value) == [0, 1, 1, 1]


def test_missing_package_or_broken_data_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    argv = ["data", "prepare", "--corpus", "chitchat", "--out", str(tmp_path / "o")]

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    with monkeypatch.context() as m:
        m.setattr(importlib.metadata, "distribution", not_installed)
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fedkb data: error: the chitchat corpus needs the chitchat-dataset package; "
                   "install it with `pip install chitchat-dataset` (or run `uv sync` in the "
                   "FedKB checkout)"]
    bad = tmp_path / "dataset.json"
    monkeypatch.setattr(chitchat, "dataset_file", lambda: bad)
    message = {"text": "hi", "sender": "a", "timestamp": "2018-05-02T19:38:15Z"}
    for content, says in [
        ('{"c1": {"messages": [[', "unreadable JSON"),
        ("[]", "top level: expected an object of conversations"),
        (json.dumps({"c1": {"prompt": "x"}}), "conversation c1: no list of 'messages'"),
        (json.dumps({"c1": {"messages": [[{"text": "hi"}]]}}),
         "conversation c1, turn 1, message 1: expected a message with string 'text', 'sender'"),
        (json.dumps({"c1": {"messages": [[{**message, "timestamp": "yesterday"}]]}}),
         "timestamp 'yesterday' is not ISO 8601"),
    ]:
        bad.write_text(content)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fedkb data: error: {bad}: ") and says in err[0]
        assert "reinstall it with `pip install chitchat-dataset`" in err[0]
    with pytest.raises(CorpusError, match="1 client"):
        bad.write_text(json.dumps({"c1": {"messages": [[message], [{**message, "text": " "}]]}}))
        prepare(PrepareConfig(corpus="chitchat", out=tmp_path / "o"))
