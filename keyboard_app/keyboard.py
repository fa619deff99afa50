"""The text field and on-screen keyboard as a plain state machine.

What a phone keyboard does between key presses, with no window: the text
(the cursor is always at its end, as in a chat box), the shift state, the
letter/symbol layer, and the small conveniences users expect: the first
letter of a sentence is capitalized, a lone "i" becomes "I", a tapped
suggestion replaces the word being typed and adds a space, and punctuation
typed right after that space moves in front of it ("word ." -> "word. ").

Every edit returns an `Edit` saying which word it completed, so the
session can count how often the suggestion strip had that word.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from models.suggest import display_form

# Named keys; every other key is the character it types.
SHIFT = "shift"
BACKSPACE = "backspace"
SPACE = "space"
LAYER = "layer"
SEND = "send"
NAMED_KEYS = (SHIFT, BACKSPACE, SPACE, LAYER, SEND)

LETTER_ROWS: tuple[tuple[str, ...], ...] = (
    tuple("qwertyuiop"),
    tuple("asdfghjkl"),
    (SHIFT, *"zxcvbnm", BACKSPACE),
    (LAYER, ",", SPACE, ".", SEND),
)
SYMBOL_ROWS: tuple[tuple[str, ...], ...] = (
    tuple("1234567890"),
    tuple("@#$%&-+()/"),
    (*"'\":;!?*", BACKSPACE),
    (LAYER, ",", SPACE, ".", SEND),
)

# The word being typed at the end of the raw text: letters/digits with inner
# apostrophes, possibly ending in one ("don'"). The tokenizer's rule, on text
# that is not yet normalized (so typographic apostrophes count too).
_PARTIAL_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]*)*\Z")  # \Z: "$" matches before a final "\n"
_SENTENCE_END = ".!?"
# Punctuation that attaches to the word before it, swallowing a suggestion's space.
_ATTACHING = frozenset(".,!?;:")


class Shift(enum.Enum):
    OFF = "off"
    ONCE = "once"  # the next letter is uppercase (set automatically at a sentence start)
    LOCKED = "locked"  # caps lock


class Layer(enum.Enum):
    LETTERS = "letters"
    SYMBOLS = "symbols"


@dataclass(frozen=True)
class Edit:
    """What one key press did to words: the word it completed, if any."""

    completed_word: str = ""
    from_suggestion: bool = False


NO_WORD = Edit()


def partial_word(text: str) -> str:
    """The word being typed at the end of `text` ('' after a space or a symbol)."""
    match = _PARTIAL_WORD.search(text)
    return match.group(0) if match else ""


def at_sentence_start(text: str) -> bool:
    """True where the next word starts a sentence: empty text, or after ". ", "! ", "? "."""
    stripped = text.rstrip()
    return not stripped or (stripped != text and stripped[-1] in _SENTENCE_END)


class Keyboard:
    """A text field driven by key presses; the cursor stays at the end."""

    def __init__(self, text: str = ""):
        self.text = text
        self.layer = Layer.LETTERS
        self.shift = Shift.OFF
        self._space_from_suggestion = False
        self._auto_shift()

    # -- what the keyboard shows ------------------------------------------

    @property
    def rows(self) -> tuple[tuple[str, ...], ...]:
        """The keys of the current layer, row by row."""
        return LETTER_ROWS if self.layer is Layer.LETTERS else SYMBOL_ROWS

    def label(self, key: str) -> str:
        """What a key shows: letters follow the shift state; named keys get symbols."""
        if key == SHIFT:
            return "\u21ea" if self.shift is Shift.LOCKED else "\u21e7"
        if key == BACKSPACE:
            return "\u232b"
        if key == SPACE:
            return "space"
        if key == LAYER:
            return "?123" if self.layer is Layer.LETTERS else "ABC"
        if key == SEND:
            return "Send"
        return key.upper() if self.shift is not Shift.OFF else key

    @property
    def partial_word(self) -> str:
        return partial_word(self.text)

    # -- key presses ----------------------------------------------------------

    def press(self, key: str) -> Edit:
        """One tap on an on-screen key (not SEND: sending is the session's job)."""
        if key == SHIFT:
            self.shift = {Shift.OFF: Shift.ONCE, Shift.ONCE: Shift.LOCKED,
                          Shift.LOCKED: Shift.OFF}[self.shift]
            return NO_WORD
        if key == LAYER:
            self.layer = Layer.SYMBOLS if self.layer is Layer.LETTERS else Layer.LETTERS
            return NO_WORD
        if key == BACKSPACE:
            return self.backspace()
        if key == SPACE:
            return self.type_char(" ")
        if key == SEND or len(key) != 1:
            raise ValueError(f"not a key the keyboard types: {key!r}")
        return self.type_char(key)

    def type_text(self, typed: str) -> list[Edit]:
        """Characters as they come from a physical keyboard (its own Shift already applied).

        Returns the words the text completed, in order.
        """
        edits = [self.type_char(char) for char in typed]
        return [edit for edit in edits if edit.completed_word]

    def type_char(self, char: str) -> Edit:
        """One character, on-screen key or physical; returns the word it completed, if any.

        The one capitalization rule: a letter typed while shift is on (by
        itself at a sentence start, or tapped) is uppercase.
        """
        if len(char) != 1:
            raise ValueError(f"type_char takes one character, got {char!r}")
        if char.isalpha() and self.shift is not Shift.OFF:
            char = char.upper()
        partial = self.partial_word
        if char in _ATTACHING and self._space_from_suggestion:
            self.text = self.text[:-1] + char + " "  # "word ." -> "word. "
            self._after_edit(space_from_suggestion=True)
            return NO_WORD
        self.text += char
        if partial and not partial_word(self.text):
            # The character ended the word: fix a lone "i" before reporting it.
            fixed = display_form(partial)
            if fixed != partial:
                start = len(self.text) - len(char) - len(partial)
                self.text = self.text[:start] + fixed + self.text[start + len(partial):]
            self._after_edit()
            return Edit(completed_word=fixed)
        self._after_edit()
        return NO_WORD

    def backspace(self) -> Edit:
        """Deletes one character; deleting a word's trailing space puts the cursor back in it."""
        if self.text:
            self.text = self.text[:-1]
        self._after_edit()
        return NO_WORD

    def delete_word(self) -> Edit:
        """Deletes back to the previous word's start (Ctrl+Backspace): spaces, then a word or a symbol."""
        text = self.text.rstrip()
        partial = partial_word(text)
        self.text = text[: len(text) - len(partial)] if partial else text[:-1]
        self._after_edit()
        return NO_WORD

    def apply_suggestion(self, word: str) -> Edit:
        """Replaces the word being typed (if any) with `word`, cased for its place, plus a space."""
        if not word:
            return NO_WORD
        cased = self.cased(word)
        self.text = self.text[: len(self.text) - len(self.partial_word)] + cased + " "
        self._after_edit(space_from_suggestion=True)
        return Edit(completed_word=cased, from_suggestion=True)

    def clear(self) -> str:
        """Empties the field (after sending) and returns what it held."""
        text, self.text = self.text, ""
        self._after_edit()
        return text

    # -- casing ---------------------------------------------------------------

    def cased(self, word: str) -> str:
        """How a suggested word (lowercase, or "I...") is inserted here.

        Caps lock or a partial word typed in capitals: all caps. Shift on
        (as it is by itself at a sentence start) or a partial word typed
        with a capital first letter: first letter capitalized. Otherwise as
        suggested, so a user who switched the sentence-start shift off, or
        typed "th" in lowercase, keeps lowercase.
        """
        partial = self.partial_word
        if self.shift is Shift.LOCKED or (len(partial) > 1 and partial.isupper()):
            return word.upper()
        capital = partial[0].isupper() if partial else self.shift is Shift.ONCE
        return word[:1].upper() + word[1:] if capital else word

    def _after_edit(self, *, space_from_suggestion: bool = False) -> None:
        self._space_from_suggestion = space_from_suggestion
        self._auto_shift()

    def _auto_shift(self) -> None:
        """Shift for the first letter of a sentence, off after any other letter (caps lock stays)."""
        if self.shift is Shift.LOCKED:
            return
        starting = at_sentence_start(self.text)
        self.shift = Shift.ONCE if starting else Shift.OFF
