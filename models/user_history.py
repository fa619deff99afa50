"""The user's own words, counted on the device and mixed into the strip.

Like the user-history dictionary of Android's keyboard (AOSP LatinIME): the
personal layer of the TFLite model can only re-weigh the shared vocabulary,
but people repeat what the shared model has never seen (their friends'
names, places, their own spelling) and their own phrases. `UserHistory`
counts, over the messages the user sent, every word and every word after
the token before it; words outside the model's vocabulary count too, so
they can be suggested.

The strip then ranks candidates by

    (1 - w) * P_model(word | context) + w * P_user(word | previous token)

where P_user is a Witten-Bell interpolation of the user's word pairs with
their single words (`probability`), and the weight grows with what there is
to go on: w = weight * n / (n + half_at) after n counted words. The
candidates are the model's best words and the user's own (after the same
previous token, or completing the same partial word), so a user's word can
enter the strip without the model knowing it.

Whether the mix is used at all is the never-worse check's decision
(`keyboard_app.personal`): it types the user's newest messages with and
without it. Pure Python, no TensorFlow: it runs on the phone, and `fedkb
eval` scores it through the same `Predictor`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from datasets.tokenizer import is_word, tokenize


@dataclass(frozen=True)
class HistoryConfig:
    """How much the user's own words weigh in the strip."""

    weight: float = 0.5  # the most the user's words can weigh (after very many words)
    half_at: int = 200  # counted words at which they weigh half of `weight`
    candidates: int = 8  # the user's best words considered per strip, besides the model's

    def __post_init__(self):
        if not 0 <= self.weight <= 1:
            raise ValueError(f"history weight must be in [0, 1], got {self.weight}")
        if self.half_at < 1 or self.candidates < 0:
            raise ValueError("history half_at must be at least 1 and candidates at least 0")


class UserHistory:
    """Counts of one user's words and word pairs; the mix weight and the re-ranked strip."""

    def __init__(self, messages: Iterable[str] = (), config: HistoryConfig = HistoryConfig()):
        self.config = config
        self.words = 0  # words counted
        self._unigrams: Counter[str] = Counter()
        self._after: defaultdict[str, Counter[str]] = defaultdict(Counter)  # previous -> words
        for text in messages:
            self.add(text)

    def add(self, text: str) -> None:
        """Counts one sent message."""
        tokens = tokenize(text)
        for previous, token in zip(tokens, tokens[1:]):
            if is_word(token):
                self.words += 1
                self._unigrams[token] += 1
                self._after[previous][token] += 1

    @property
    def weight(self) -> float:
        """w: how much P_user weighs in the strip, growing with the words counted."""
        return self.config.weight * self.words / (self.words + self.config.half_at)

    def probability(self, word: str, previous: str) -> float:
        """P_user(word | previous): Witten-Bell, the word pairs backed off to single words."""
        if not self.words:
            return 0.0
        unigram = self._unigrams[word] / self.words
        after = self._after.get(previous)
        if not after:
            return unigram
        seen, kinds = sum(after.values()), len(after)
        return (after[word] + kinds * unigram) / (seen + kinds)

    def candidates(self, previous: str, partial: str) -> list[str]:
        """The user's most frequent words after `previous` (or starting with `partial`)."""
        n = self.config.candidates
        if partial:
            pool = ((w, c) for w, c in self._unigrams.items() if w.startswith(partial))
            return [w for w, _ in sorted(pool, key=lambda wc: (-wc[1], wc[0]))[:n]]
        after = self._after.get(previous, Counter())
        words = [w for w, _ in sorted(after.items(), key=lambda wc: (-wc[1], wc[0]))[:n]]
        return words + [w for w, _ in self._unigrams.most_common(n) if w not in after][:n - len(words)]

    def rerank(self, model_words: list[str], model_probability: Callable[[str], float],
               previous: str, partial: str, k: int) -> list[str]:
        """The k best of the model's words and the user's by the mixed probability, best first.

        `model_words` come in the model's order (a tie keeps it);
        `model_probability(word)` is P_model, 0 for a word outside its vocabulary.
        """
        w = self.weight
        pool = list(dict.fromkeys(model_words + self.candidates(previous, partial)))
        score = {word: (1 - w) * model_probability(word) + w * self.probability(word, previous)
                 for word in pool}
        return sorted(pool, key=lambda word: -score[word])[:k]  # stable: the model's order on ties
