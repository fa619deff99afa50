"""The whole keyboard app without a window: what happens between two taps.

`KeyboardSession` ties the keyboard state machine, the suggestion strip on
top of the predictor, the sent messages and the opt-in personal learner
together. The Kivy layer only forwards taps and key presses here and shows
the result; tests and `fedkb bench` drive the same object directly.

For `fedkb bench`: `KeyboardSession.refresh_suggestions()` is one
suggestion refresh (what every key press costs), `cold_start()` times
opening a model directory up to the first suggestions, and
`session.learner.personalize_blocking()` runs one fine-tuning pass over the
stored messages on the calling thread and says how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from datasets.tokenizer import normalize
from keyboard_app.keyboard import SEND, Edit, Keyboard
from keyboard_app.personal import LearnerConfig, PersonalLearner
from keyboard_app.predictor import Predictor
from keyboard_app.suggestions import EMPTY_STRIP, Strip, refresh_strip

# The learner's own directory inside the user's private app directory.
PERSONAL_SUBDIR = "personal"


class KeyboardSession:
    """One user typing: text field, suggestion strip, conversation and personal learner."""

    def __init__(self, predictor: Predictor, user_dir: str | Path,
                 learner_config: LearnerConfig = LearnerConfig(),
                 on_learner_update: Callable[[], None] | None = None):
        self.predictor = predictor
        self.user_dir = Path(user_dir)
        self.keyboard = Keyboard()
        self.conversation: list[str] = []
        self.learner = PersonalLearner(predictor, self.user_dir / PERSONAL_SUBDIR,
                                       learner_config, on_update=on_learner_update)
        self.strip: Strip = EMPTY_STRIP
        # Words the strip showed since the last word ended, with the fewest letters typed
        # when each was shown: could the user have tapped the next word before finishing it?
        self._offered: dict[str, int] = {}
        self.refresh_suggestions()

    @classmethod
    def open(cls, model_dir: str | Path, user_dir: str | Path, **kwargs) -> "KeyboardSession":
        """Loads the model directory (raises `ModelDirError` for a missing or damaged one)."""
        return cls(Predictor(model_dir), user_dir, **kwargs)

    @property
    def text(self) -> str:
        return self.keyboard.text

    @property
    def suggestions(self) -> tuple[str, ...]:
        """The strip's three slots, left to right ('' for an empty slot)."""
        return self.strip.slots

    # -- input ------------------------------------------------------------------

    def press(self, key: str) -> None:
        """A tap on an on-screen key, SEND included."""
        if key == SEND:
            self.send()
        else:
            self._after(self.keyboard.press(key))

    def type_text(self, text: str) -> None:
        """Characters from a physical keyboard, as typed; the strip refreshes after each one."""
        for char in text:
            self._after(self.keyboard.type_char(char))

    def backspace(self) -> None:
        self._after(self.keyboard.backspace())

    def delete_word(self) -> None:
        self._after(self.keyboard.delete_word())

    def tap_suggestion(self, slot: int) -> str:
        """Inserts the word in slot 0..2 (left to right); returns it ('' for an empty slot)."""
        word = self.strip.slots[slot]
        if word:
            self._after(self.keyboard.apply_suggestion(word))
        return word

    def send(self) -> str:
        """Moves the text to the conversation (and to the learner, if learning is on)."""
        partial = self.keyboard.partial_word
        if partial:
            self._count_word(Edit(completed_word=partial))
        message = self.keyboard.clear().strip()
        if message:
            self.conversation.append(message)
            self.learner.add_message(message)
        self._after(Edit())
        return message

    # -- suggestions ------------------------------------------------------------

    def refresh_suggestions(self) -> Strip:
        """One refresh of the strip for the current text (the cost of every key press)."""
        self.strip = refresh_strip(self.predictor.suggest, self.keyboard.text, self.keyboard.cased)
        typed = len(self.keyboard.partial_word)
        for word in self.strip.words:
            self._offered[word] = min(self._offered.get(word, typed), typed)
        return self.strip

    def _after(self, edit: Edit) -> None:
        if edit.completed_word:
            self._count_word(edit)
        self.refresh_suggestions()

    def _count_word(self, edit: Edit) -> None:
        """A finished word is a hit if it was tapped, or shown before its last letter was typed.

        (Once a word is typed in full the strip often shows it anyway; that saves nothing.)
        """
        word = normalize(edit.completed_word)
        hit = edit.from_suggestion or self._offered.get(word, len(word)) < len(word)
        self.learner.record_word(hit)
        self._offered = {}

    def forget(self) -> None:
        """"Forget my data": the learner's files and weights, and the messages on screen."""
        self.learner.forget()
        self.conversation.clear()
        self.refresh_suggestions()

    def close(self) -> None:
        self.learner.close()


def cold_start(model_dir: str | Path, user_dir: str | Path) -> tuple[KeyboardSession, float]:
    """Opens a session and returns it with the seconds until its first suggestions were ready.

    Includes reading and checking the model directory, creating the LiteRT
    interpreter and restoring personal weights. Run it in a fresh process to
    include importing LiteRT too.
    """
    started = time.perf_counter()
    session = KeyboardSession.open(model_dir, user_dir)
    return session, time.perf_counter() - started
