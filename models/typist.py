"""The simulated typist: the keyboard rule every FedKB figure and the app's own check use.

One place for the rule: `fl_pipeline.evaluation.keyboard_metrics` (the server's `fedkb
eval`) and the app's never-worse check (`keyboard_app.personal`) both type
messages with `type_message`, so the figure the server reports and the
one the phone decides by are the same. Pure Python on top of the
`models.suggest.Suggester` contract: no TensorFlow, no `keyboard_app`.

Rules:

- A message is typed as one line of the tokenizer's normalized text:
  whitespace runs become one space, the ends are stripped, NFKC and
  lowercase (the app capitalizes by itself and a suggestion matches the
  intended word case-insensitively, so case costs nothing; shift is no
  keystroke). Every remaining character counts once in `characters`.
- The model sees exactly what the app passes: the current message up to the
  cursor (`suggest(message[:i], 3)`), from <bos>; no earlier message.
- Words are the tokenizer's words (`datasets.tokenizer.word_spans`). A word
  outside the vocabulary is a hit only where the strip shows it: a model
  alone never can (it is typed in full and a miss in every metric, and it
  stays in every denominator); the user's own words mixed in
  (`models/user_history.py`) can.
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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from datasets.tokenizer import normalize, word_spans
from datasets.vocab import OOV_ID, Vocabulary
from models.suggest import Suggester

STRIP = 3  # words in the suggestion strip
ATTACHING = frozenset(".,!?;:")  # punctuation the app moves in front of a tapped word's space

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
        tally.words += 1
        tally.oov_words += vocab.id(word) == OOV_ID
        tally.next_top1 += word in strip(s, 1)
        tally.next_top3 += word in strip(s)
        for letters, name in ((1, "complete1"), (2, "complete2")):
            if len(word) > letters:
                setattr(tally, f"{name}_words", getattr(tally, f"{name}_words") + 1)
                hit = word in strip(s + letters)
                setattr(tally, f"{name}_top3", getattr(tally, f"{name}_top3") + hit)

    word_at = {}  # cursor position -> (word, its end), for positions at or inside a word
    for s, e in spans:
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
