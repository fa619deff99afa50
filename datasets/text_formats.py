"""Bring-your-own-text readers: JSONL, CSV, and a directory of per-client `.txt` files.

- JSONL: one JSON object per line with a `client_id` (string or integer)
  and a `text` (string); other keys are ignored; blank lines are ignored.
- CSV: a header row with `client_id` and `text` columns (any others are
  ignored); fields may be quoted and span lines, as the `csv` module reads them.
- Directory: `DIR/<client>.txt` or `DIR/<client>/*.txt` (files read in name
  order). Every non-blank line of a `.txt` file is one text of that client.

Every reader checks each line for UTF-8 and length (`corpus.decoded_lines`)
and sends line problems to the `ReadLog`. Texts keep their source order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from datasets.corpus import (ClientTexts, Corpus, CorpusError, ReadLog, check_path, decoded_lines,
                             progress_bar)

CLIENT_COLUMN = "client_id"
TEXT_COLUMN = "text"


def _byte_progress(path: Path, what: str) -> tqdm:
    return progress_bar(total=path.stat().st_size, unit="B", unit_scale=True,
                        desc=f"reading {what}")


def _is_unicode(text: str) -> bool:
    """False for strings with lone surrogates, which JSON escapes like "\\ud800" can produce."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _client_id(value: object) -> str | None:
    """A client id from a JSON value: strings as they are, integers as decimals."""
    if isinstance(value, str) and value.strip() and _is_unicode(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_jsonl(path: Path, log: ReadLog) -> Corpus:
    """Clients from a JSONL file: {"client_id": ..., "text": ...} per line."""
    check_path(path)
    texts = ClientTexts(log)
    content = False  # any line that is not blank (usable or bad)
    with path.open("rb") as stream, _byte_progress(path, path.name) as progress:
        for number, line in decoded_lines(stream, str(path), log, progress):
            content = content or line is None or bool(line.strip())
            if line is None or not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                detail = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                log.bad_line(where, "not_json", f"not a JSON object ({detail})")
                continue
            if not isinstance(record, dict):
                log.bad_line(where, "not_json",
                             f"expected a JSON object, got a JSON {type(record).__name__}")
                continue
            missing = [k for k in (CLIENT_COLUMN, TEXT_COLUMN) if k not in record]
            if missing:
                log.bad_line(where, "missing_field",
                             f"the object lacks {' and '.join(repr(k) for k in missing)} "
                             f"(each line needs \"{CLIENT_COLUMN}\" and \"{TEXT_COLUMN}\")")
                continue
            client = _client_id(record[CLIENT_COLUMN])
            if client is None:
                log.bad_line(where, "bad_field",
                             f"\"{CLIENT_COLUMN}\" must be a non-empty string or an integer")
                continue
            if not isinstance(record[TEXT_COLUMN], str) or not _is_unicode(record[TEXT_COLUMN]):
                log.bad_line(where, "bad_field", f"\"{TEXT_COLUMN}\" must be a string of "
                             "Unicode text (no lone \\ud800-\\udfff escapes)")
                texts.mention(client)
                continue
            texts.add(client, record[TEXT_COLUMN], where)
    if not content:
        log.empty_file(path)
    return texts.corpus("jsonl", str(path), [str(path)])


def _csv_lines(lines: Iterable[tuple[int, str | None]]) -> Iterator[str]:
    """Lines for `csv.reader`; a bad line (already logged) becomes a blank line."""
    for _, line in lines:
        yield "\n" if line is None else line + "\n"


def read_csv(path: Path, log: ReadLog) -> Corpus:
    """Clients from a CSV file with `client_id` and `text` columns."""
    check_path(path)
    texts = ClientTexts(log)
    with path.open("rb") as stream, _byte_progress(path, path.name) as progress:
        reader = csv.reader(_csv_lines(decoded_lines(stream, str(path), log, progress)))
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise CorpusError(f"{path}:1: not a CSV header ({e}); the first line must name "
                              f"the columns, including {CLIENT_COLUMN} and {TEXT_COLUMN}") from None
        if header is None:
            log.empty_file(path)
            return texts.corpus("csv", str(path), [str(path)])
        names = [name.strip() for name in header]
        if CLIENT_COLUMN not in names or TEXT_COLUMN not in names:
            raise CorpusError(f"{path}:1: the CSV header has columns {names[:10]}; it needs "
                              f"'{CLIENT_COLUMN}' and '{TEXT_COLUMN}' columns (others are "
                              "ignored); add or rename them")
        client_index, text_index = names.index(CLIENT_COLUMN), names.index(TEXT_COLUMN)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                log.bad_line(f"{path}:{reader.line_num}", "bad_csv", f"not valid CSV ({e})")
                continue
            where = f"{path}:{reader.line_num}"
            if not row or not any(field.strip() for field in row):
                continue  # a blank line, or a bad line blanked by _csv_lines
            if len(row) <= max(client_index, text_index):
                log.bad_line(where, "missing_field",
                             f"the row has {len(row)} fields but the header has {len(names)}")
                continue
            client = row[client_index]
            if not client.strip():
                log.bad_line(where, "bad_field", f"empty {CLIENT_COLUMN}")
                continue
            texts.add(client, row[text_index], where)
    return texts.corpus("csv", str(path), [str(path)])


def _read_txt(path: Path, client: str, texts: ClientTexts, log: ReadLog) -> None:
    texts.mention(client)
    content = False  # any line that is not blank (usable or bad)
    with path.open("rb") as stream:
        for number, line in decoded_lines(stream, str(path), log):
            if line is None or line.strip():
                content = True
            if line is not None and line.strip():
                texts.add(client, line, f"{path}:{number}")
    if not content:
        log.empty_file(path)  # nothing but blank lines


def read_directory(path: Path, log: ReadLog) -> Corpus:
    """Clients from `DIR/<client>.txt` files and `DIR/<client>/` sub-directories of `.txt` files."""
    check_path(path)
    texts = ClientTexts(log)
    owner: dict[str, Path] = {}  # client id -> the file or directory that holds it
    files: list[str] = []
    layout = "a directory corpus holds <client>.txt files or <client>/ sub-directories of .txt files"
    with progress_bar(sorted(path.iterdir()), desc=f"reading {path.name}/", unit="client") as bar:
        for entry in bar:
            if entry.is_dir():
                client, members = entry.name, sorted(entry.iterdir())
            elif entry.suffix == ".txt":
                client, members = entry.stem, [entry]
            else:
                log.bad_file(entry, f"not a .txt file or a directory ({layout})")
                continue
            if client in owner:
                raise CorpusError(f"{owner[client]} and {entry} both hold client '{client}'; "
                                  "merge them into one (client ids must be unique)")
            owner[client] = entry
            for member in members:
                if member.is_file() and member.suffix == ".txt":
                    _read_txt(member, client, texts, log)
                    files.append(str(member))
                else:
                    log.bad_file(member, f"not a .txt file ({layout})")
    if not owner:
        raise CorpusError(f"{path}: directory holds no clients; {layout}")
    return texts.corpus("directory", str(path), files)
