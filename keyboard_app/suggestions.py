"""The suggestion strip: three words above the keyboard, the most likely in the middle.

Mobile keyboards put the best guess in the centre, where the thumb rests,
the second on the left and the third on the right. The words come from the
predictor (lowercase vocabulary words) and are shown exactly as a tap will
insert them, cased by the keyboard for where the cursor is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from datasets.tokenizer import normalize

SLOTS = 3
# Slot (left to right) of the 1st, 2nd and 3rd most likely word.
RANK_TO_SLOT = (1, 0, 2)


def strip_order(ranked: Sequence[str]) -> tuple[str, ...]:
    """Up to three words, most likely first -> their slots left to right ('' for an empty slot)."""
    slots = [""] * SLOTS
    for rank, word in enumerate(ranked[:SLOTS]):
        slots[RANK_TO_SLOT[rank]] = word
    return tuple(slots)


@dataclass(frozen=True)
class Strip:
    """One refresh of the strip."""

    slots: tuple[str, ...]  # left, middle, right, as inserted ('' when fewer words fit)
    ranked: tuple[str, ...]  # the same words, most likely first

    @property
    def words(self) -> frozenset[str]:
        """The words shown, normalized like the tokenizer: was a typed word offered?"""
        return frozenset(normalize(word) for word in self.ranked)


EMPTY_STRIP = Strip(slots=("",) * SLOTS, ranked=())


def refresh_strip(suggest: Callable[[str, int], list[str]], text: str,
                  cased: Callable[[str], str]) -> Strip:
    """The strip for the text before the cursor: `suggest(text, 3)` cased by `cased`.

    `suggest` is `Predictor.suggest`: next words after a space or at the
    start, completions inside a word.
    """
    ranked = tuple(cased(word) for word in suggest(text, SLOTS))
    return Strip(slots=strip_order(ranked), ranked=ranked)
