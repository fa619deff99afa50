"""Which reader a `--corpus` value means.

`fortunes` (the built-in corpus), `chitchat` (real typed chat, from the
`chitchat-dataset` package) and `stackoverflow` are names; anything
else is a path: a directory, a `.jsonl`/`.ndjson` file, a `.csv` file, or a
TFF SQL client-data file (`.sqlite`, `.sqlite3`, `.db`).
"""

from __future__ import annotations

from pathlib import Path

from datasets.chitchat import read_chitchat
from datasets.corpus import Corpus, CorpusError, ReadLog, check_path
from datasets.fortunes import read_builtin_fortunes
from datasets.sql_corpus import read_sql_client_data, read_stackoverflow
from datasets.text_formats import read_csv, read_directory, read_jsonl

BUILTIN = "fortunes"
CHITCHAT = "chitchat"
STACKOVERFLOW = "stackoverflow"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)
SQL_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def read_corpus(spec: str, log: ReadLog, *, include_offensive: bool = False,
                max_clients: int | None = None, seed: int = 0) -> Corpus:
    """The corpus `spec` names, read with line problems going to `log`.

    `max_clients` and `seed` let SQL sources read only the clients `prepare`
    would keep; the other readers read everything.
    """
    if spec == BUILTIN:
        return read_builtin_fortunes(log, include_offensive)
    if spec == CHITCHAT:
        return read_chitchat(log)
    if spec == STACKOVERFLOW:
        return read_stackoverflow(log, max_clients=max_clients, seed=seed)
    path = check_path(Path(spec))
    suffix = path.suffix.lower()
    if path.is_dir():
        return read_directory(path, log)
    if suffix in JSONL_SUFFIXES:
        return read_jsonl(path, log)
    if suffix in CSV_SUFFIXES:
        return read_csv(path, log)
    if suffix in SQL_SUFFIXES:
        return read_sql_client_data(path, log, max_clients=max_clients, seed=seed)
    known = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES + SQL_SUFFIXES)
    raise CorpusError(f"{path}: unknown corpus format '{suffix or path.name}'; pass a directory, "
                      f"a file ending in {known}, '{BUILTIN}', '{CHITCHAT}' or '{STACKOVERFLOW}'")
