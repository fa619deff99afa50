"""The keyboard's `suggest` contract and its word rules, shared by the device and the server.

Every model FedKB compares as a keyboard answers through one call,
`suggest(text_before_cursor, k) -> list[str]` (the `Suggester` protocol):
`keyboard_app.predictor.Predictor` on the phone, and in `fedkb eval` the
Keras, n-gram and bigram models through `ScoreSuggester`. The rules that
turn next-token scores into the words of the strip live here, once:

- only words are offered: never the special tokens or punctuation
  (`Vocabulary.is_word`);
- after a space, a symbol or at the start: the k best words; inside a partly
  typed word: the k best words starting with it, case-insensitively, the
  typed word itself included when it is complete ("the" -> the, then, there);
- words come back lowercase except the pronoun I and its contractions
  (`display_form`); capitalizing a sentence's first word is the keyboard's job.

Pure Python and numpy: the app imports this on the device (no TensorFlow),
and the server side imports it without importing `keyboard_app`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from datasets.tokenizer import normalize, split_context
from datasets.vocab import PAD_ID, Vocabulary

# The pronoun "I" and its contractions ("i'm", "i'll", typographic "i’m" too) are
# capitalized wherever they stand, in the strip and as the user types; the
# tokenizer lowercases them again, so "I'm" reads back as the word "i'm".
_PRONOUN_I = re.compile(r"i(?:['\u2019][a-z]+)?")


@runtime_checkable
class Suggester(Protocol):
    """What the suggestion strip asks a model: the k words to offer, most likely first."""

    def suggest(self, text_before_cursor: str, k: int = 3) -> list[str]: ...


def display_form(word: str) -> str:
    """How a vocabulary word is inserted: as is, except "I", "I'm", "I'll", ..."""
    return "I" + word[1:] if _PRONOUN_I.fullmatch(word) else word


class WordRanker:
    """Next-token scores [V] + the partial word -> the k words to offer (the rules above)."""

    def __init__(self, vocab: Vocabulary):
        word_ids = [i for i in range(len(vocab)) if vocab.is_word(i)]
        self._word_ids = np.array(word_ids, dtype=np.int64)
        by_spelling = sorted((normalize(vocab.tokens[i]), i) for i in word_ids)
        self._sorted_words = [word for word, _ in by_spelling]
        self._sorted_ids = np.array([i for _, i in by_spelling], dtype=np.int64)
        self._display = [display_form(token) for token in vocab.tokens]

    def top_words(self, scores: np.ndarray, partial: str, k: int) -> list[str]:
        """The k best-scored words (completions of `partial`, if any), best first."""
        return [self._display[i] for i in self.top_ids(scores, partial, k)]

    def top_ids(self, scores: np.ndarray, partial: str, k: int) -> list[int]:
        """The token ids of `top_words`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if partial:
            start = bisect.bisect_left(self._sorted_words, partial)
            stop = bisect.bisect_left(self._sorted_words, partial + "\U0010ffff", lo=start)
            candidates = self._sorted_ids[start:stop]
        else:
            candidates = self._word_ids
        scores = np.asarray(scores)[candidates]
        if len(candidates) > k:
            best = np.argpartition(-scores, k - 1)[:k]
        else:
            best = np.arange(len(candidates))
        best = best[np.argsort(-scores[best], kind="stable")]
        return [int(i) for i in candidates[best]]


def context_ids(ids: Sequence[int], context_len: int) -> list[int]:
    """The last T ids, left-padded with <pad> (as in training and on the device)."""
    ids = list(ids)[-context_len:]
    return [PAD_ID] * (context_len - len(ids)) + ids


class ScoreSuggester:
    """Any next-token scorer as a `Suggester`, with the device's tokenization and word rules.

    `next_scores(context)` gets the last `context_len` token ids before the
    cursor (left-padded with <pad>) and returns scores over the vocabulary
    [V] (log-probabilities, logits or probabilities: only the order counts).
    The last context's scores are kept, since typing a word asks for the
    same context once per key press.
    """

    def __init__(self, vocab: Vocabulary, next_scores: Callable[[list[int]], np.ndarray],
                 context_len: int):
        self.vocab = vocab
        self.context_len = context_len
        self._next_scores = next_scores
        self._ranker = WordRanker(vocab)
        self._cache: tuple[tuple[int, ...], np.ndarray] | None = None

    def suggest(self, text_before_cursor: str, k: int = 3) -> list[str]:
        tokens, partial = split_context(text_before_cursor)
        key = tuple(context_ids(self.vocab.encode(tokens), self.context_len))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, np.asarray(self._next_scores(list(key))))
        return self._ranker.top_words(self._cache[1], partial, k)
