"""The prepared client store: TFF SQL client data that a round reads lazily.

A prepared data directory holds:

- `clients.sqlite`: one SQLite file in TFF's SQL client-data schema, with
  all three splits in it (`split_name` = train / heldout_past /
  heldout_future). `examples(split_name, client_id, serialized_example_proto)`
  holds one serialized `tf.train.Example` per window, with a single int64
  feature `tokens` of T+1 ids; `client_metadata(client_id, split_name,
  num_examples)` lists the clients of each split. Both are indexed on
  client_id, so TFF's per-client query reads one client's rows only.
- `vocab.json`: the vocabulary the ids refer to.
- `stats.json`: what was read, split, skipped and written (written last: a
  directory without it is not a finished store).

`ClientStore` opens such a directory. Everything but `client_data` is plain
`sqlite3` and JSON; TensorFlow is imported only when a split's
`ClientData` is built (with TFF's own `load_and_parse_sql_client_data`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import fedkb_command
from datasets.splits import SPLITS
from datasets.vocab import VOCAB_FILE, Vocabulary

STORE_FILE = "clients.sqlite"
STATS_FILE = "stats.json"
FORMAT = "fedkb-client-store/1"
FEATURE = "tokens"
SEGMENTS = "segments"  # packed stores only: the message of each token (datasets/examples.py)

__all__ = ["SPLITS", "ClientStore", "StoreError", "StoreWriter", "serialize_tokens",
           "serialize_example", "store_client_id", "STORE_FILE", "VOCAB_FILE", "STATS_FILE", "FORMAT",
           "FEATURE", "SEGMENTS"]


class StoreError(FedKBError, ValueError):
    """A data directory that is not a (complete, consistent) prepared store."""


def store_client_id(client_id: str) -> str:
    """The id as stored: `%` and `'` percent-escaped (`O'Brien` -> `O%27Brien`).

    TFF's `SqlClientData` builds its per-client query by pasting the id
    between single quotes, so an id with a quote would break the query.
    Escaping `%` as well keeps the mapping one-to-one.
    """
    return client_id.replace("%", "%25").replace("'", "%27")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def serialize_example(features: dict[str, Sequence[int]]) -> bytes:
    """`tf.train.Example` of int64 list features (ids >= 0), serialized.

    Written out by hand (a test checks it against TensorFlow's parser and
    `tf.train.Example.SerializeToString`) so that preparing a corpus does not
    import TensorFlow: that import alone takes 3-8 s, longer than the rest
    of preparing the built-in corpus.
    Example.features(1) -> Features.feature(1, map entry: key 1, value 2)
    -> Feature.int64_list(3) -> Int64List.value(1, packed varints).
    """
    entries = b""
    for name, ids in features.items():
        int64_list = _field(1, b"".join(_varint(i) for i in ids)) if len(ids) else b""
        entries += _field(1, _field(1, name.encode()) + _field(2, _field(3, int64_list)))
    return _field(1, entries)


def serialize_tokens(ids: Sequence[int]) -> bytes:
    """`tf.train.Example(features={"tokens": Int64List(ids)})`, serialized."""
    return serialize_example({FEATURE: ids})


class StoreWriter:
    """Writes `clients.sqlite` in TFF's schema, one client at a time, in one transaction.

    `tff.simulation.datasets.save_to_sql_client_data` writes the same schema
    but builds and iterates a `tf.data` dataset per client: 13 s per 1,000
    clients on this machine (plus the TensorFlow import), about 50 s for the
    built-in corpus. Writing the same rows directly takes well under a second. The file is built under a
    temporary name and renamed when complete, so a crash never leaves a
    half-written store behind.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._partial.unlink(missing_ok=True)
        self._db = sqlite3.connect(self._partial)
        self._db.execute("PRAGMA journal_mode = OFF")  # a temporary file: no journal needed
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("""CREATE TABLE examples (
            split_name TEXT NOT NULL,
            client_id TEXT NOT NULL,
            serialized_example_proto BLOB NOT NULL)""")
        self._db.execute("""CREATE TABLE client_metadata (
            client_id TEXT NOT NULL,
            split_name TEXT NOT NULL,
            num_examples INTEGER NOT NULL)""")

    def add(self, split: str, client_id: str, examples: Iterable[bytes]) -> int:
        """Stores a client's serialized examples in `split`; returns how many."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        rows = [(split, client_id, blob) for blob in examples]
        if rows:
            self._db.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows)
            self._db.execute("INSERT INTO client_metadata VALUES (?, ?, ?)",
                             (client_id, split, len(rows)))
        return len(rows)

    def close(self) -> None:
        """Indexes the tables, commits, and moves the file into place."""
        # Indexes after the inserts: faster than maintaining them row by row.
        self._db.execute("CREATE INDEX examples_by_client ON examples (client_id, split_name)")
        self._db.execute("CREATE UNIQUE INDEX client_metadata_by_client "
                         "ON client_metadata (client_id, split_name)")
        self._db.commit()
        self._db.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        self._db.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ClientStore:
    """A prepared data directory opened for reading (lazily: only sampled clients are read)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        prepare = f"run `{fedkb_command('data', 'prepare', '--out', self.data_dir)}`"
        redo = f"run `{fedkb_command('data', 'prepare', '--out', self.data_dir, '--force')}`"
        if not self.data_dir.is_dir():
            raise StoreError(f"{self.data_dir}: no such data directory; {prepare} first")
        stats_path = self.data_dir / STATS_FILE
        try:
            self.stats: dict = json.loads(stats_path.read_text("utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{stats_path}: missing, so {self.data_dir} is not a prepared "
                             f"(or a completely prepared) data directory; {prepare}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{stats_path}: unreadable ({e}); {redo}") from None
        if not isinstance(self.stats, dict) or self.stats.get("format") != FORMAT:
            raise StoreError(f"{stats_path}: not a FedKB data store of format {FORMAT}; {redo}")
        self.vocab: Vocabulary = Vocabulary.load(self.data_dir / VOCAB_FILE)
        if self.vocab.sha256 != self.stats.get("vocab", {}).get("sha256"):
            raise StoreError(f"{self.data_dir / VOCAB_FILE}: does not match the vocabulary the "
                             f"store was prepared with (sha256 in {STATS_FILE}); {redo}")
        self.seq_len: int = int(self.stats["seq_len"])
        self.database = self.data_dir / STORE_FILE
        if not self.database.is_file():
            raise StoreError(f"{self.database}: missing; {redo}")

    @contextlib.contextmanager
    def _query(self):
        db = sqlite3.connect(f"{self.database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield db
        except sqlite3.Error as e:
            redo = fedkb_command("data", "prepare", "--out", self.data_dir, "--force")
            raise StoreError(f"{self.database}: unreadable ({e}); run `{redo}` again") from None
        finally:
            db.close()

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def client_ids(self, split: str) -> list[str]:
        """The clients with at least one example in `split`, sorted."""
        self._check_split(split)
        with self._query() as db:
            rows = db.execute("SELECT client_id FROM client_metadata WHERE split_name = ?",
                              (split,)).fetchall()
        return sorted(row[0] for row in rows)

    def num_examples(self, split: str, client_id: str) -> int:
        """How many windows `client_id` holds in `split` (KeyError if none)."""
        self._check_split(split)
        with self._query() as db:
            row = db.execute("SELECT num_examples FROM client_metadata WHERE split_name = ? "
                             "AND client_id = ?", (split, client_id)).fetchone()
        if row is None:
            raise KeyError(f"client {client_id!r} has no examples in split {split!r}")
        return int(row[0])

    def client_data(self, split: str):
        """The split as `tff.simulation.datasets.ClientData` of {"tokens": int64 [T+1]}.

        Built by TFF's `load_and_parse_sql_client_data`: each client's
        dataset runs one SQL query for that client's rows, so sampling a
        cohort reads only the cohort.
        """
        self._check_split(split)
        import tensorflow as tf
        import tensorflow_federated as tff

        element_spec = {FEATURE: tf.TensorSpec(shape=[self.seq_len + 1], dtype=tf.int64)}
        return tff.simulation.datasets.load_and_parse_sql_client_data(
            str(self.database), element_spec, split_name=split)
