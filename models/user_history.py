"""The user's own words, counted on the device and mixed into the strip.

Like the user-history dictionary of Android's keyboard (AOSP LatinIME): the
personal layer of the TFLite model can only re-weigh the shared vocabulary,
but people repeat what the shared model has never seen (their friends'
names, places, their own spelling) and their own phrases. `UserHistory`
counts, over the messages the user sent, every word after the `order - 1`
tokens before it (and after fewer, down to none); words outside the
model's vocabulary count too, so they can be suggested.

The strip then ranks candidates by

    (1 - w) * P_model(word | context) + w * P_user(word | last tokens)

where P_user is a Witten-Bell interpolation of the user's counts, from the
longest context down to one token, and to single words while a word is
being typed (`probability`), and the weight grows
with what there is to go on: w = weight * n / (n + half_at) after n counted
words. The candidates are the model's best words and the user's own (after
the same tokens, or completing the same partial word), so a user's word can
enter the strip without the model knowing it.

Whether the mix is used at all is the never-worse check's decision
(`keyboard_app.personal`): it types the user's newest messages with and
without it. Pure Python, no TensorFlow: it runs on the phone, and `fedkb
eval` scores it through the same `Predictor`.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from datasets.tokenizer import is_word, tokenize


@dataclass(frozen=True)
class HistoryConfig:
    """How much the user's own words weigh in the strip."""

    weight: float = 0.5  # the most the user's words can weigh (after very many words)
    half_at: int = 200  # counted words at which they weigh half of `weight`
    candidates: int = 8  # the user's best words considered per strip, besides the model's
    order: int = 3  # 3: a word after the two tokens before it, backed off to one, then none

    def __post_init__(self):
        if not 0 <= self.weight <= 1:
            raise ValueError(f"history weight must be in [0, 1], got {self.weight}")
        if self.half_at < 1 or self.candidates < 0 or self.order < 1:
            raise ValueError("history half_at and order must be at least 1, candidates at least 0")


class UserHistory:
    """Counts of one user's words and short phrases; the mix weight and the re-ranked strip."""

    def __init__(self, messages: Iterable[str] = (), config: HistoryConfig = HistoryConfig()):
        self.config = config
        # context (the tokens before, () for none) -> the words that followed it
        self._after: defaultdict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        self._seen: Counter[tuple[str, ...]] = Counter()  # context -> words counted after it
        for text in messages:
            self.add(text)

    def add(self, text: str) -> None:
        """Counts one sent message."""
        tokens = tokenize(text)
        for i, token in enumerate(tokens):
            if i and is_word(token):
                for n in range(min(self.config.order, i + 1)):
                    context = tuple(tokens[i - n:i])
                    self._after[context][token] += 1
                    self._seen[context] += 1

    @property
    def words(self) -> int:
        """Words counted (each counts once after the empty context)."""
        return self._seen[()]

    @property
    def weight(self) -> float:
        """w: how much P_user weighs in the strip, growing with the words counted."""
        return self.config.weight * self.words / (self.words + self.config.half_at)

    def _contexts(self, before: Sequence[str], partial: str) -> list[tuple[str, ...]]:
        """The contexts of `before` (the tokens before the cursor) that were seen, longest first.

        The user's single words (the empty context) only while a word is being typed: after
        a context they never wrote, their most frequent words say nothing about the next one
        (measured: as good or better on chat, and "It is a " no longer turns to their "the").
        """
        tail = tuple(before[-(self.config.order - 1):]) if self.config.order > 1 else ()
        return [tail[i:] for i in range(len(tail) + (1 if partial else 0))
                if tail[i:] in self._after]

    def probability(self, word: str, before: Sequence[str], partial: str = "") -> float:
        """P_user(word | the last tokens): Witten-Bell, from the longest seen context down."""
        return self._probability(word, self._contexts(before, partial))

    def _probability(self, word: str, contexts: list[tuple[str, ...]]) -> float:
        p = 0.0
        for context in reversed(contexts):  # the shortest first
            after = self._after[context]
            seen, kinds = self._seen[context], (len(after) if context else 0)
            p = (after[word] + kinds * p) / (seen + kinds)
        return p

    def candidates(self, before: Sequence[str], partial: str) -> list[str]:
        """The user's most frequent words after the last tokens (or starting with `partial`)."""
        return self._candidates(self._contexts(before, partial), partial)

    def _candidates(self, contexts: list[tuple[str, ...]], partial: str) -> list[str]:
        n = self.config.candidates
        words: list[str] = []
        for context in contexts:  # longest first; ties: the word seen first
            after = self._after[context]
            if partial:
                best = heapq.nlargest(n, ((w, c) for w, c in after.items()
                                          if w.startswith(partial)), key=lambda wc: wc[1])
            else:
                best = after.most_common(n + len(words))
            words += [w for w, _ in best if w not in words]
            if len(words) >= n:
                break
        return words[:n]

    def rerank(self, model_words: list[str], model_probability: Callable[[str], float],
               before: Sequence[str], partial: str, k: int) -> list[str]:
        """The k best of the model's words and the user's by the mixed probability, best first.

        `model_words` come in the model's order (a tie keeps it);
        `model_probability(word)` is P_model, 0 for a word outside its vocabulary.
        """
        w, contexts = self.weight, self._contexts(before, partial)
        pool = list(dict.fromkeys(model_words + self._candidates(contexts, partial)))
        score = {word: (1 - w) * model_probability(word) + w * self._probability(word, contexts)
                 for word in pool}
        return sorted(pool, key=lambda word: -score[word])[:k]  # stable: the model's order on ties
