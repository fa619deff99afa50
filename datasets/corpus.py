"""What every corpus reader produces, and how it reports bad input.

A reader turns a source (the fortune files, a JSONL/CSV file, a directory, a
TFF SQL file) into a `Corpus`: client id -> that client's texts, in the order
the source holds them. Problems with single lines go through a `ReadLog`,
which either stops with a `CorpusError` naming the file and line (the
default) or, with `--skip-bad-lines`, counts them by reason so that
`stats.json` can show everything that was left out.

Pure Python (no TensorFlow): `fedkb data prepare` on text files stays fast.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from datasets.errors import FedKBError

# Longest accepted line (and longest text from a SQL file), in UTF-8 bytes.
# 100 kB is about 15,000 words: far more than anyone types into a keyboard in
# one message (the longest built-in fortune is about 2 kB), yet far below the
# megabyte-long lines that come from binary files, minified dumps or files
# without line breaks, which would otherwise become one giant "text" that
# dominates its client.
MAX_LINE_BYTES = 100_000

# How many individual problems a warning quotes before it only counts them.
QUOTED_PROBLEMS = 3


class CorpusError(FedKBError, ValueError):
    """A corpus that cannot be read as it is; the message says where and what to do."""


@dataclass
class Corpus:
    """Texts grouped by client, as read from one source.

    `clients` maps a client id to its texts in source order (the order is
    what splits texts into a client's past and future). `source` says where
    the texts came from, for `stats.json`.
    """

    name: str
    source: str
    clients: dict[str, list[str]]
    files: list[str] = field(default_factory=list)
    # Clients the reader left unread because of --max-clients (large SQL sources only).
    clients_not_read: int = 0

    @property
    def num_texts(self) -> int:
        return sum(len(texts) for texts in self.clients.values())


@dataclass
class ReadLog:
    """Bad lines and empty texts met while reading: raised, or counted when skipping.

    Reasons are short keys ("not_utf8", "line_too_long", "not_json",
    "missing_field", ...) so that `stats.json` can count them.
    """

    skip_bad_lines: bool = False
    bad_lines: collections.Counter = field(default_factory=collections.Counter)
    empty_texts: int = 0
    empty_files: int = 0
    skipped_files: int = 0
    clients_without_texts: int = 0
    quoted: list[str] = field(default_factory=list)

    def _record(self, message: str) -> None:
        if not self.skip_bad_lines:
            raise CorpusError(message)
        if len(self.quoted) < QUOTED_PROBLEMS:
            self.quoted.append(message)

    def bad_line(self, where: str, reason: str, message: str) -> None:
        """A line that cannot be used. `where` is "file:line"."""
        self._record(f"{where}: {message}; fix the line or pass --skip-bad-lines to skip it")
        self.bad_lines[reason] += 1

    def empty_text(self, where: str, fixable: bool = True) -> None:
        """An empty text; `fixable=False` (a published data set's own) is only counted."""
        if fixable:
            self._record(f"{where}: empty text; remove it or pass --skip-bad-lines to skip it")
        self.empty_texts += 1

    def empty_file(self, path: Path) -> None:
        self._record(f"{path}: file is empty; remove it or pass --skip-bad-lines to skip it")
        self.empty_files += 1

    def bad_file(self, path: Path, message: str) -> None:
        self._record(f"{path}: {message}; remove it or pass --skip-bad-lines to skip it")
        self.skipped_files += 1

    @property
    def num_bad_lines(self) -> int:
        return sum(self.bad_lines.values())

    def counts(self) -> dict:
        """What was skipped, for `stats.json`."""
        return {
            "bad_lines": self.num_bad_lines,
            "bad_lines_by_reason": dict(sorted(self.bad_lines.items())),
            "empty_texts": self.empty_texts,
            "empty_files": self.empty_files,
            "skipped_files": self.skipped_files,
        }

    def warning(self) -> str | None:
        """One line for the user when something was skipped, else None."""
        if not (self.num_bad_lines or self.empty_texts or self.empty_files or self.skipped_files):
            return None
        reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in
                            sorted(self.bad_lines.items()))
        parts = [f"skipped {self.num_bad_lines} bad lines" + (f" ({reasons})" if reasons else ""),
                 f"{self.empty_texts} empty texts", f"{self.empty_files} empty files",
                 f"{self.skipped_files} other files"]
        first = "; first: " + " | ".join(self.quoted) if self.quoted else ""
        return ", ".join(parts) + first


class ClientTexts:
    """Collects (client, text) pairs in source order; empty texts go to the log."""

    def __init__(self, log: ReadLog):
        self.log = log
        self.clients: dict[str, list[str]] = {}
        self._seen: set[str] = set()

    def add(self, client_id: str, text: str, where: str) -> None:
        self._seen.add(client_id)
        if not text.strip():
            self.log.empty_text(where)
            return
        self.clients.setdefault(client_id, []).append(text)

    def mention(self, client_id: str) -> None:
        """A client seen in the source, even if none of its texts turns out usable."""
        self._seen.add(client_id)

    def corpus(self, name: str, source: str, files: list[str]) -> Corpus:
        self.log.clients_without_texts += len(self._seen - self.clients.keys())
        return Corpus(name, source, self.clients, files)


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar shown only on a terminal and erased when closed.

    Open it in a `with` block: an error then erases the bar before its one-line
    message is printed, instead of leaving a half-drawn bar in front of it.
    On a stderr that is not a terminal (a log, CI) no bar is drawn at all.
    """
    return tqdm(iterable, leave=False, disable=None, **kwargs)


def decoded_lines(stream: BinaryIO, name: str, log: ReadLog,
                  progress: tqdm | None = None) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line of a binary stream, checked for UTF-8 and length.

    A bad line is reported to `log` (which raises unless skipping) and then
    yielded as (number, None) so the caller can keep its own structure (a
    fortune or a CSV record continues). Line ends (LF or CRLF) are removed; a
    UTF-8 byte-order mark at the start is dropped. Lines are read with a cap,
    so a gigabyte without a newline never sits in memory at once. `progress`
    (a tqdm bar counting bytes) advances as lines are read.
    """
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        if progress is not None:
            progress.update(len(raw))
        number += 1
        where = f"{name}:{number}"
        if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                raw = stream.readline(1 << 20)
                if progress is not None:
                    progress.update(len(raw))
            log.bad_line(where, "line_too_long",
                         f"line longer than {MAX_LINE_BYTES:,} bytes (a keyboard text is far "
                         "shorter; is this a text file with line breaks?)")
            yield number, None
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            log.bad_line(where, "not_utf8",
                         f"bytes that are not UTF-8 at byte {e.start + 1} of the line; "
                         "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")
            yield number, None
            continue
        yield number, text.rstrip("\r\n")


def check_path(path: Path) -> Path:
    """The path itself, or a `CorpusError` saying it does not exist."""
    if not path.exists():
        raise CorpusError(f"{path}: no such file or directory; pass an existing file or "
                          "directory to --corpus (or 'fortunes' / 'chitchat' / 'stackoverflow')")
    return path
