"""Corpora stored in TFF's SQL client-data format, including TFF's Stack Overflow.

A TFF SQL client-data file (what `tff.simulation.datasets.save_to_sql_client_data`
writes and `load_and_parse_sql_client_data` reads) is a SQLite database with
an `examples(split_name, client_id, serialized_example_proto)` table of
serialized `tf.train.Example`s and a `client_metadata` table. The text of an
example is its `text` bytes feature (or `tokens`, as in Stack Overflow).

The rows are read with `sqlite3` and parsed with `tf.train.Example` rather
than through `SqlClientData`: the latter builds a `tf.data` pipeline per
client, which takes seconds per thousand clients, while a corpus is read
once, whole. A client's texts are its rows in insertion order, over all of
the file's splits (FedKB makes its own train/held-out split). TensorFlow is
imported only once a row has to be parsed.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import socket
import sqlite3
import urllib.error
from collections.abc import Iterator
from pathlib import Path

from datasets.corpus import (MAX_LINE_BYTES, ClientTexts, Corpus, CorpusError, ReadLog,
                             check_path, progress_bar)
from datasets.splits import select_clients

TEXT_FEATURES = ("text", "tokens")
REQUIRED_EXAMPLES_COLUMNS = {"split_name", "client_id", "serialized_example_proto"}
STACKOVERFLOW_FILE = "stackoverflow.sqlite"
# Longest silence tolerated from the network while TFF downloads Stack Overflow.
NETWORK_TIMEOUT_S = 30


def _connect(path: Path) -> sqlite3.Connection:
    """The database opened read-only, or a `CorpusError` if it is not a TFF SQL client-data file."""
    advice = ("pass a SQLite file written by tff.simulation.datasets.save_to_sql_client_data "
              "(tables examples and client_metadata)")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in connection.execute("PRAGMA table_info(examples)")}
    except sqlite3.Error as e:
        raise CorpusError(f"{path}: not a readable SQLite database ({e}); {advice}") from None
    missing = ({"examples", "client_metadata"} - tables) or (REQUIRED_EXAMPLES_COLUMNS - columns)
    if missing:
        connection.close()
        raise CorpusError(f"{path}: missing {', '.join(sorted(missing))}; {advice}")
    return connection


def _has_client_index(connection: sqlite3.Connection) -> bool:
    for index in connection.execute("PRAGMA index_list(examples)"):
        name = str(index[1]).replace("'", "''")
        first = connection.execute(f"PRAGMA index_info('{name}')").fetchone()
        if first and first[2] == "client_id":
            return True
    return False


def _rows(connection: sqlite3.Connection, clients: set[str] | None) -> Iterator[tuple]:
    """(rowid, client_id, proto) in insertion order, for all clients or only `clients`."""
    query = "SELECT rowid, client_id, serialized_example_proto FROM examples"
    if clients is None:
        yield from connection.execute(f"{query} ORDER BY rowid")
    elif _has_client_index(connection):  # cheap per-client reads
        for client in sorted(clients):
            yield from connection.execute(f"{query} WHERE client_id = ? ORDER BY rowid", (client,))
    else:  # one pass over the table beats one full scan per client
        yield from (row for row in connection.execute(f"{query} ORDER BY rowid")
                    if row[1] in clients)


class _ExampleText:
    """Gets the text out of a serialized `tf.train.Example` (imports TensorFlow on first use)."""

    def __init__(self, feature: str | None):
        self.feature = feature
        self._parse = None

    def __call__(self, blob: bytes, where: str, log: ReadLog) -> str | None:
        if self._parse is None:
            import tensorflow as tf
            from google.protobuf.message import DecodeError

            self._parse, self._decode_error = tf.train.Example.FromString, DecodeError
        try:
            features = self._parse(bytes(blob)).features.feature
        except self._decode_error as e:
            log.bad_line(where, "not_example", f"not a serialized tf.train.Example ({e})")
            return None
        if self.feature is None:
            found = [name for name in TEXT_FEATURES if name in features]
            if not found:
                raise CorpusError(f"{where}: examples have no text feature (found "
                                  f"{sorted(features)[:10]}; expected one of {list(TEXT_FEATURES)})")
            self.feature = found[0]
        if self.feature not in features or not features[self.feature].bytes_list.value:
            log.bad_line(where, "missing_field", f"the example has no bytes feature '{self.feature}'")
            return None
        raw = features[self.feature].bytes_list.value[0]
        if len(raw) > MAX_LINE_BYTES:
            log.bad_line(where, "line_too_long", f"text longer than {MAX_LINE_BYTES:,} bytes")
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            log.bad_line(where, "not_utf8", f"text bytes that are not UTF-8 at byte {e.start + 1}")
            return None


def read_sql_client_data(path: Path, log: ReadLog, *, text_feature: str | None = None,
                         corpus_name: str = "sql", max_clients: int | None = None,
                         seed: int = 0) -> Corpus:
    """Clients from a TFF SQL client-data file.

    With `max_clients`, only that many clients (chosen by the seed, as
    `prepare` would choose them) are read: large files stay cheap.
    """
    check_path(path)
    if path.is_file() and path.stat().st_size == 0:
        log.empty_file(path)
        return Corpus(corpus_name, str(path), {}, [str(path)])
    connection = _connect(path)
    try:
        try:
            every_client = [row[0] for row in connection.execute(  # TFF's list of client ids
                "SELECT DISTINCT client_id FROM client_metadata")]
        except sqlite3.Error as e:
            raise CorpusError(f"{path}: cannot read the client_metadata table ({e})") from None
        wanted = None
        if max_clients is not None and len(every_client) > max_clients:
            wanted = set(select_clients([str(c) for c in every_client], max_clients, seed))
        texts = ClientTexts(log)
        text_of = _ExampleText(text_feature)
        try:
            with progress_bar(_rows(connection, wanted), desc=f"reading {path.name}",
                              unit=" rows") as bar:
                for rowid, client, blob in bar:
                    where = f"{path}: examples row {rowid}"
                    client = str(client)
                    if not client.strip() or not isinstance(blob, bytes):
                        log.bad_line(where, "bad_field",
                                     "empty client_id or a proto that is not a BLOB")
                        continue
                    text = text_of(blob, where, log)
                    if text is None:
                        texts.mention(client)
                    else:
                        texts.add(client, text, where)
        except sqlite3.Error as e:
            raise CorpusError(f"{path}: cannot read the examples table ({e})") from None
    finally:
        connection.close()
    corpus = texts.corpus(corpus_name, str(path), [str(path)])
    corpus.clients_not_read = len(every_client) - len(wanted) if wanted is not None else 0
    return corpus


@contextlib.contextmanager
def _network_timeout(seconds: float):
    """Bounds how long a silent network may block the download (urllib's default is forever)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def read_stackoverflow(log: ReadLog, *, max_clients: int | None, seed: int = 0,
                       cache_dir: Path | None = None) -> Corpus:
    """TFF's federated Stack Overflow (about 1.4 GB download), `max_clients` users of it.

    Uses `tff.simulation.datasets.stackoverflow.load_data`, which downloads
    and caches the SQL file (in `cache_dir`, default `~/.tff`); its `tokens`
    feature (already lowercased and tokenized by TFF) is the text.
    """
    if max_clients is None:
        raise CorpusError("stackoverflow: the corpus holds 342,477 training users and 135 million "
                          "sentences, too many to prepare at once; pass --max-clients (e.g. 5000)")
    cache = Path(cache_dir) if cache_dir else Path.home() / ".tff"
    database = cache / STACKOVERFLOW_FILE
    existed = database.exists()
    import tensorflow_federated as tff

    try:
        with _network_timeout(NETWORK_TIMEOUT_S):
            tff.simulation.datasets.stackoverflow.load_data(cache_dir=str(cache))
    except (urllib.error.URLError, OSError, EOFError, lzma.LZMAError) as e:
        if not existed and database.exists():
            os.remove(database)  # a partial download would later pass for a cached copy
        reason = getattr(e, "reason", None) or e
        raise CorpusError(f"stackoverflow: downloading TFF's Stack Overflow dataset needs network "
                          f"access ({reason}); use it on a machine with internet, or pass another "
                          "--corpus") from None
    return read_sql_client_data(database, log, text_feature="tokens", corpus_name="stackoverflow",
                                max_clients=max_clients, seed=seed)
