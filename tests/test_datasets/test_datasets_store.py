"""The client store as TFF reads it, TFF SQL files as a corpus, and Stack Overflow offline.

The only dataset tests that import TensorFlow/TFF.
"""

import json
import random
import socket
import sqlite3

import pytest

tf = pytest.importorskip("tensorflow")
tff = pytest.importorskip("tensorflow_federated")

from datasets.corpus import CorpusError, ReadLog  # noqa: E402
from datasets.examples import encode_text, windows  # noqa: E402
from datasets.prepare import PrepareConfig, prepare  # noqa: E402
from datasets.sql_corpus import read_sql_client_data, read_stackoverflow  # noqa: E402
from datasets.store import SPLITS, ClientStore, serialize_tokens  # noqa: E402

SEQ_LEN = 6


def tf_example(ids):
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=ids))
    return tf.train.Example(features=tf.train.Features(feature={"tokens": feature}))


def test_hand_serialized_examples_are_the_bytes_tensorflow_writes():
    rng = random.Random(0)
    cases = [[], [0], [0, 1, 2, 3], [127, 128, 16383, 16384, 2**31, 2**62]]
    cases += [[rng.randrange(0, 50_000) for _ in range(21)] for _ in range(50)]
    for ids in cases:
        assert serialize_tokens(ids) == tf_example(ids).SerializeToString()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A prepared store of 40 small clients, plus their texts."""
    tmp = tmp_path_factory.mktemp("store")
    texts = {f"c{i:02d}": [f"Hello world number {j}. The cat sat on the mat {i} times." * (1 + j % 2)
                           for j in range(1 + i % 5)] for i in range(40)}
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps({"client_id": c, "text": t}) + "\n"
                              for c, ts in texts.items() for t in ts))
    prepare(PrepareConfig(corpus=str(corpus), out=tmp / "out", vocab_size=60, seq_len=SEQ_LEN,
                          heldout_fraction=0.25))
    return tmp / "out", texts


def test_tff_client_data_yields_every_window_of_every_client(store_dir):
    out, texts = store_dir
    store = ClientStore(out)
    for split in SPLITS:
        data = store.client_data(split)
        assert data.client_ids == store.client_ids(split) != []
        assert data.element_type_structure["tokens"] == tf.TensorSpec([SEQ_LEN + 1], tf.int64)
        for client in data.client_ids[:5]:
            got = [e["tokens"].numpy().tolist() for e in data.create_tf_dataset_for_client(client)]
            own = texts[client]
            if split != "train":
                cut = store.num_examples("heldout_past", client)
                all_windows = [w for t in own for w in windows(encode_text(t, store.vocab), SEQ_LEN)]
                own_windows = all_windows[:cut] if split == "heldout_past" else all_windows[cut:]
            else:
                own_windows = [w for t in own for w in windows(encode_text(t, store.vocab), SEQ_LEN)]
            assert got == own_windows and len(got) == store.num_examples(split, client)


def test_serializable_dataset_fn_works_inside_a_tff_computation(store_dir):
    out, _ = store_dir
    store = ClientStore(out)
    data = store.client_data("train")
    dataset_fn = data.serializable_dataset_fn

    @tff.tensorflow.computation(tf.string)
    def count_examples(client_id):
        return dataset_fn(client_id).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)

    assert str(count_examples.type_signature) == "(str -> int64)"
    client = data.client_ids[0]
    eager = dataset_fn(tf.constant(client)).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
    assert int(eager) == store.num_examples("train", client)


def test_reading_one_client_touches_only_that_clients_rows(tmp_path):
    """Build a store of many clients, wreck every other client's rows: the sampled ones still read,
    and SQLite answers TFF's per-client query from the client_id index, not a table scan."""
    corpus = tmp_path / "many.jsonl"
    corpus.write_text("".join(json.dumps({"client_id": f"user{i:04d}", "text": f"hi {i}"}) + "\n"
                              for i in range(3000) for _ in range(2)))
    out = tmp_path / "out"
    prepare(PrepareConfig(corpus=str(corpus), out=out, vocab_size=30, seq_len=SEQ_LEN))
    store = ClientStore(out)
    sampled = random.Random(0).sample(store.client_ids("train"), 10)
    with sqlite3.connect(out / "clients.sqlite") as db:
        marks = ",".join("?" * len(sampled))
        db.execute(f"UPDATE examples SET serialized_example_proto = 'garbage' WHERE client_id NOT IN "
                   f"({marks})", sampled)
        plan = db.execute("EXPLAIN QUERY PLAN SELECT serialized_example_proto FROM examples "
                          f"WHERE client_id = '{sampled[0]}' and split_name ='train'").fetchall()
    assert "USING INDEX examples_by_client" in " ".join(str(row) for row in plan)
    data = store.client_data("train")
    for client in sampled:
        assert len(list(data.create_tf_dataset_for_client(client))) == 2  # its two texts
    other = next(c for c in store.client_ids("train") if c not in sampled)
    with pytest.raises(tf.errors.InvalidArgumentError):  # the wrecked rows really are unreadable
        list(data.create_tf_dataset_for_client(other))


def write_tff_sql_corpus(path, clients):
    """A corpus file written by TFF's own save_to_sql_client_data."""
    def dataset_fn(client):
        return tf.data.Dataset.from_tensor_slices({"text": clients[client]})

    tff.simulation.datasets.save_to_sql_client_data(list(clients), dataset_fn, str(path))


def test_tff_sql_client_data_file_is_a_corpus(tmp_path):
    clients = {"ann": ["first post.", "second post."], "bob": ["hello there.", "bye."],
               "cy": ["x y z.", "a b c."]}
    path = tmp_path / "corpus.sqlite"
    write_tff_sql_corpus(path, clients)
    corpus = read_sql_client_data(path, ReadLog())
    assert corpus.clients == clients
    selected = read_sql_client_data(path, ReadLog(), max_clients=2, seed=0)
    assert len(selected.clients) == 2 and selected.clients_not_read == 1
    with sqlite3.connect(path) as db:  # with an index, the sampled clients are read one by one
        db.execute("CREATE INDEX by_client ON examples (client_id)")
    assert read_sql_client_data(path, ReadLog(), max_clients=2, seed=0).clients == selected.clients
    stats = prepare(PrepareConfig(corpus=str(path), out=tmp_path / "out", vocab_size=30)).stats
    assert stats["splits"]["train"]["texts"] + stats["splits"]["heldout_past"]["texts"] + \
        stats["splits"]["heldout_future"]["texts"] == 6


def test_tff_sql_file_without_a_text_feature_says_which_features_it_has(tmp_path):
    path = tmp_path / "numbers.sqlite"
    tff.simulation.datasets.save_to_sql_client_data(
        ["a"], lambda c: tf.data.Dataset.from_tensor_slices({"pixels": [1.0, 2.0]}), str(path))
    with pytest.raises(CorpusError, match=r"no text feature \(found \['pixels'\]"):
        read_sql_client_data(path, ReadLog())


def online(host="storage.googleapis.com"):
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(120)
def test_stackoverflow_offline_fails_with_one_line_about_network_access(tmp_path):
    if online():
        pytest.skip("this machine is online: the test would download 1.4 GB")
    with pytest.raises(CorpusError) as error:
        read_stackoverflow(ReadLog(), max_clients=10, cache_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("stackoverflow: downloading TFF's Stack Overflow dataset needs "
                              "network access") and "\n" not in message
    assert not (tmp_path / "stackoverflow.sqlite").exists()
    with pytest.raises(CorpusError, match="pass --max-clients"):
        read_stackoverflow(ReadLog(), max_clients=None, cache_dir=tmp_path)
