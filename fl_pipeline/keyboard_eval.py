"""Keyboard metrics: what a typist feels, for any model behind `suggest(text_before_cursor, k)`.

Token-level top-k (`fl_pipeline.baselines`) scores token ids; these figures
score the suggestion strip. Every model is asked through the same
`models.suggest.Suggester` contract as the app's predictor, and the same
simulated typist types every held-out user's future messages.

Rules (one place for all of them):

- A message is typed as one line of the tokenizer's normalized text:
  whitespace runs become one space, the ends are stripped, NFKC and
  lowercase (the app capitalizes by itself and a suggestion matches the
  intended word case-insensitively, so case costs nothing; shift is no
  keystroke). Every remaining character counts once in `characters`.
- The model sees exactly what the app passes: the current message up to the
  cursor (`suggest(message[:i], 3)`), from <bos>; no earlier message.
- Words are the tokenizer's words (`datasets.tokenizer.word_spans`). A word
  outside the vocabulary can never be suggested: it is typed in full and is
  a miss in every metric (it stays in every denominator).
- Next word, top-1 / top-3: at the start of each word, is it the strip's
  first word / among its three words?
- Completion, top-3 after 1 (2) letters: after the first 1 (2) letters of
  each word of at least 2 (3) letters (completing a word already typed in
  full saves nothing, so such words are not counted), is it in the strip?
- Keystroke savings rate: at every cursor position at the start of or
  inside a word, the typist taps the word if the strip shows it: one
  keystroke inserts the rest of the word and a space. That space stands for
  the message's next space; when attaching punctuation (. , ! ? ; :) follows
  the word, the app moves it in front of the space, so the punctuation is
  typed (a keystroke each) and the space after it is the tap's. At the end
  of the message the extra space costs nothing (sending strips it); before
  anything else (a quote, a hyphen, a letter) the typist deletes it: one
  backspace. Otherwise the typist types the next character: one keystroke.
  Spaces and symbols not inserted by a tap are keystrokes.
  KSR = 1 - keystrokes / characters.

Each figure is reported pooled (every word, or for KSR every character,
counts once) and as the mean over users (each user's own rate, every user
counts once), over at most `max_messages_per_user` future messages of each
user, so no one prolific user decides the result.

Pure Python on top of the contract: the neural models reach it as exported
TFLite files run by LiteRT. The server side never imports `keyboard_app`;
`fl_pipeline.evaluate.compare` takes a factory `model_dir -> Suggester` and
the `fedkb eval` command passes the app's own `Predictor` (see there).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from datasets.tokenizer import normalize, word_spans
from datasets.vocab import OOV_ID, PAD_ID, Vocabulary
from models.suggest import ScoreSuggester, Suggester

STRIP = 3  # words in the suggestion strip
ATTACHING = frozenset(".,!?;:")  # punctuation the app moves in front of a tapped word's space
MAX_MESSAGES_PER_USER = 200

FIGURES = ("next_top1", "next_top3", "complete1_top3", "complete2_top3", "ksr")


@dataclass
class Tally:
    """Counts behind the figures, for one message, one user or everyone (they add up)."""

    words: int = 0
    oov_words: int = 0
    next_top1: int = 0
    next_top3: int = 0
    complete1_words: int = 0
    complete1_top3: int = 0
    complete2_words: int = 0
    complete2_top3: int = 0
    characters: int = 0
    keystrokes: int = 0

    def __iadd__(self, other: "Tally") -> "Tally":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def rates(self) -> dict[str, float | None]:
        """The five figures (None where nothing was counted)."""
        def rate(hits, total):
            return hits / total if total else None
        return {"next_top1": rate(self.next_top1, self.words),
                "next_top3": rate(self.next_top3, self.words),
                "complete1_top3": rate(self.complete1_top3, self.complete1_words),
                "complete2_top3": rate(self.complete2_top3, self.complete2_words),
                "ksr": rate(self.characters - self.keystrokes, self.characters)}


def typed_form(text: str) -> str:
    """The message as the typist types it: one line, normalized like the tokenizer."""
    return normalize(" ".join(text.split()))


def type_message(suggester: Suggester, text: str, vocab: Vocabulary) -> Tally:
    """Types one message with `suggester`'s strip, by the rules of the module docstring."""
    message = typed_form(text)
    strips: dict[int, list[str]] = {}

    def strip(i: int, top: int = STRIP) -> list[str]:
        if i not in strips:
            strips[i] = [normalize(w) for w in suggester.suggest(message[:i], STRIP)]
        return strips[i][:top]

    tally = Tally(characters=len(message))
    spans = word_spans(message)
    for s, e in spans:  # the strip figures: the same cursor positions for every model
        word = message[s:e]
        known = vocab.id(word) != OOV_ID
        tally.words += 1
        tally.oov_words += not known
        tally.next_top1 += known and word in strip(s, 1)
        tally.next_top3 += known and word in strip(s)
        for letters, name in ((1, "complete1"), (2, "complete2")):
            if len(word) > letters:
                setattr(tally, f"{name}_words", getattr(tally, f"{name}_words") + 1)
                hit = known and word in strip(s + letters)
                setattr(tally, f"{name}_top3", getattr(tally, f"{name}_top3") + hit)

    word_at = {}  # cursor position -> (word, its end), for positions at or inside a word
    for s, e in spans:
        if vocab.id(message[s:e]) != OOV_ID:  # out of vocabulary: typed in full
            for i in range(s, e):
                word_at[i] = (message[s:e], e)
    i = 0
    while i < len(message):
        if i in word_at and word_at[i][0] in strip(i):
            tally.keystrokes += 1  # the tap: the rest of the word and a space
            i = word_at[i][1]
            while i < len(message) and message[i] in ATTACHING:
                tally.keystrokes += 1  # typed; the app moves it in front of the tap's space
                i += 1
            if i < len(message):
                if message[i] == " ":
                    i += 1  # the tap's space
                else:
                    tally.keystrokes += 1  # backspace over a space the message does not have
        else:
            tally.keystrokes += 1
            i += 1
    return tally


def type_messages(suggester: Suggester, texts: Iterable[str], vocab: Vocabulary) -> Tally:
    """One user's messages typed with one suggester (its tallies added up)."""
    tally = Tally()
    for text in texts:
        tally += type_message(suggester, text, vocab)
    return tally


def summarize(tallies: Mapping[str, Tally]) -> dict:
    """{"pooled": figures, "user_mean": figures, "counts": totals} over users' tallies."""
    total = Tally()
    for tally in tallies.values():
        total += tally
    per_user = [tally.rates() for tally in tallies.values()]
    user_mean = {}
    for name in FIGURES:
        values = [rates[name] for rates in per_user if rates[name] is not None]
        user_mean[name] = float(np.mean(values)) if values else None
    return {"pooled": total.rates(), "user_mean": user_mean,
            "counts": {"users": len(tallies),
                       **{f.name: getattr(total, f.name) for f in fields(total)}}}


def sample_messages(future: Mapping[str, Sequence[str]], *, max_users: int | None,
                    max_messages_per_user: int = MAX_MESSAGES_PER_USER, seed: int = 0
                    ) -> dict[str, list[str]]:
    """Users with future messages (a seeded sample of `max_users` if given), each capped to
    their first `max_messages_per_user` messages, in their order."""
    users = sorted(u for u, texts in future.items() if texts)
    if max_users is not None and len(users) > max_users:
        users = sorted(random.Random(seed).sample(users, max_users))
    return {u: list(future[u][:max_messages_per_user]) for u in users}


# -- models that are not the app's predictor, as Suggesters --------------------------------

def keras_suggester(predict: Callable, vocab: Vocabulary, context_len: int) -> ScoreSuggester:
    """A Keras next-word model (`predict(x int32 [1, T]) -> logits [1, T, V]`) as a Suggester.

    The last position's logits after the left-padded context: what the
    exported model's `suggest` signature computes, without quantization.
    """
    def scores(context: list[int]) -> np.ndarray:
        return np.asarray(predict(np.array([context], dtype=np.int32)))[0, -1]
    return ScoreSuggester(vocab, scores, context_len)


def ngram_suggester(model, vocab: Vocabulary, context_len: int) -> ScoreSuggester:
    """A model with `distribution(u, v) -> P(w | u, v)` (the trigram, the bigram) as a Suggester."""
    def scores(context: list[int]) -> np.ndarray:
        u = context[-2] if len(context) >= 2 else PAD_ID
        return model.distribution(u, context[-1])
    return ScoreSuggester(vocab, scores, context_len)
