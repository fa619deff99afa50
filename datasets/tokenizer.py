"""The one tokenizer FedKB uses for training, export and the app.

Pure Python on purpose: the keyboard app imports it on the device, where
TensorFlow is not available. Text is NFKC-normalized and lowercased; words
keep inner apostrophes (``don't``), numbers are tokens, every other symbol is
a token of its own, and sentences are wrapped in ``<bos>`` ... ``<eos>``.
"""

from __future__ import annotations

import re
import unicodedata

PAD = "<pad>"
OOV = "<oov>"
BOS = "<bos>"
EOS = "<eos>"
SPECIAL_TOKENS = (PAD, OOV, BOS, EOS)

# Symbols that end a sentence. A run of them ("?!", "...") ends it once.
SENTENCE_END = frozenset(".!?")

# A word: letters and digits, with apostrophes only inside ("don't", "o'clock").
_WORD = r"[^\W_]+(?:'[^\W_]+)*"
_TOKEN_RE = re.compile(rf"{_WORD}|[^\w\s]|_")
_WORD_RE = re.compile(_WORD)
# The word being typed at the cursor: may end in an apostrophe ("don'").
_PARTIAL_RE = re.compile(r"[^\W_]+(?:'[^\W_]*)*\Z")  # \Z: "$" also matches before a final "\n"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def normalize(text: str) -> str:
    """NFKC, typographic apostrophes to ASCII, lowercase."""
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()


def words(text: str) -> list[str]:
    """The tokens of `text` without sentence markers."""
    return _TOKEN_RE.findall(normalize(text))


def is_word(token: str) -> bool:
    """A word token (letters or digits), not a sentence marker or a symbol."""
    return _WORD_RE.fullmatch(token) is not None


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word of `text` (not symbols), as the tokenizer cuts words.

    For text whose normalization keeps its length (no NFKC expansion), so
    that the spans index `text` itself.
    """
    return [m.span() for m in _WORD_RE.finditer(normalize(text))]


def sentences(text: str) -> list[list[str]]:
    """Tokens of `text` grouped into sentences, each ``<bos> ... <eos>``."""
    result: list[list[str]] = []
    current: list[str] = []
    for token in words(text):
        if token in SENTENCE_END and not current and result:
            result[-1].insert(-1, token)  # "?!" or "...": still the same ending
            continue
        current.append(token)
        if token in SENTENCE_END:
            result.append([BOS, *current, EOS])
            current = []
    if current:
        result.append([BOS, *current, EOS])
    return result


def tokenize(text: str) -> list[str]:
    """All sentences of `text`, flattened: the token stream training sees."""
    return [token for sentence in sentences(text) for token in sentence]


def split_context(text_before_cursor: str) -> tuple[list[str], str]:
    """Splits what precedes the cursor into (context tokens, partial word).

    The context ends the way the token stream would continue: after a
    finished sentence it ends ``<eos> <bos>``; inside a sentence it has no
    ``<eos>``. The partial word is the normalized word being typed ('' after
    a space or a symbol).
    """
    normalized = normalize(text_before_cursor)
    match = _PARTIAL_RE.search(normalized)
    partial = match.group(0) if match else ""
    done = normalized[: len(normalized) - len(partial)]
    tokens = tokenize(done)
    if not tokens:
        return [BOS], partial
    if tokens[-2] in SENTENCE_END:
        return [*tokens, BOS], partial
    return tokens[:-1], partial
