"""The Kivy keyboard app: a thin window over `KeyboardSession`.

All layout is in `keyboard.kv`; this module only forwards taps and key
presses to the session and copies its state into typed properties the
layout binds to. Kivy is not thread-safe: the personal learner reports from
its worker thread, and `_learner_updated` hops to the main thread
(`@mainthread`) before touching any property.

Importing this module creates no window (the Window is imported inside
methods); `run_app` starts the app. Set ``KIVY_NO_ARGS=1`` before importing
Kivy so it leaves the command line alone (the `fedkb` CLI does).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import sys
from pathlib import Path

from kivy.app import App
from kivy.clock import Clock, mainthread
from kivy.properties import (BooleanProperty, DictProperty, ListProperty, NumericProperty,
                             ObjectProperty, StringProperty)
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.utils import platform

from keyboard_app.info import HIT_EXPLANATION, describe_model, describe_personal, missing_model_help
from keyboard_app.keyboard import NAMED_KEYS
from keyboard_app.personal import LearnerConfig, make_private_dir
from keyboard_app.predictor import ModelDirError
from keyboard_app.session import KeyboardSession

log = logging.getLogger(__name__)

# A phone's portrait window (about 9:19.5), scaled down to fit the screen.
PHONE_SIZE = (412, 915)
SCREEN_MARGIN = 0.92

# SDL keycodes the physical keyboard sends for keys that type no text.
KEY_BACKSPACE, KEY_ENTER, KEY_KP_ENTER, KEY_ESCAPE = 8, 13, 271, 27
# How long a banner after a tap ("Deleted: ...") stays before it goes away by itself.
NOTICE_SECONDS = 5


class KeyButton(Button):
    """One key of the on-screen keyboard; its look is in keyboard.kv."""

    key = StringProperty()


class SuggestionButton(Button):
    """One of the three slots of the suggestion strip."""

    slot = NumericProperty(0)


class MessageBubble(Label):
    """A sent message in the conversation area: as wide as its text, wrapped at `max_width`."""

    max_width = NumericProperty(300)

    def __init__(self, **kwargs):
        # Measured before the next frame: the Label's text renderer does not exist yet here.
        self._trigger_wrap = Clock.create_trigger(self._wrap, -1)
        super().__init__(**kwargs)
        self._trigger_wrap()

    def on_text(self, *_args) -> None:
        self._trigger_wrap()

    def on_max_width(self, *_args) -> None:
        self._trigger_wrap()

    def _wrap(self, *_args) -> None:
        self.text_size = (None, None)
        self.texture_update()
        if self.texture_size[0] > self.max_width:
            self.text_size = (self.max_width, None)


class KeyRow(BoxLayout):
    """A row of keys, rebuilt when the layer changes its keys.

    Each key's button is made once and kept: a dropped button's keyboard.kv rules stay bound
    to the app's properties, and once the button was garbage-collected the next change of
    those properties raised ReferenceError (a weakly-referenced object) and closed the app."""

    keys = ListProperty()

    def __init__(self, **kwargs):
        self._buttons: dict[str, KeyButton] = {}
        super().__init__(**kwargs)

    def on_keys(self, _row, keys) -> None:
        self.clear_widgets()
        for key in keys:
            if key not in self._buttons:
                self._buttons[key] = KeyButton(key=key)
            self.add_widget(self._buttons[key])


class Conversation(BoxLayout):
    """The sent messages, newest at the bottom, followed by the ScrollView around it."""

    messages = ListProperty()

    def on_messages(self, _box, messages) -> None:
        shown = len(self.children)
        for text in messages[shown:]:
            self.add_widget(MessageBubble(text=text))
        if len(messages) < shown:
            self.clear_widgets()
            for text in messages:
                self.add_widget(MessageBubble(text=text))

    def on_height(self, *_args) -> None:
        """Scrolls to the bottom whenever a bubble is added or takes its size, however many frames that takes."""
        if self.parent is not None:
            self.parent.scroll_y = 0


class FedKBApp(App):
    """The keyboard app. `model_dir` and `user_dir` come from `fedkb app`."""

    title = "FedKB keyboard"
    kv_file = str(Path(__file__).with_name("keyboard.kv"))

    # What keyboard.kv shows, copied from the session after every change.
    screen = StringProperty("keyboard")  # "keyboard", "info" or "no_model"
    problem_title = StringProperty("No keyboard model yet")
    problem = StringProperty("")  # the missing-model help, when there is no usable model
    text = StringProperty("")
    suggestions = ListProperty(["", "", ""])
    rows = ListProperty([[], [], [], []])
    key_labels = DictProperty()
    shift = StringProperty("off")
    conversation = ListProperty()
    learning = BooleanProperty(False)
    busy = BooleanProperty(False)
    personalized = BooleanProperty(False)
    model_text = StringProperty("")
    personal_text = StringProperty("")
    notice = StringProperty("")
    scale = NumericProperty(1.0)  # window height / 915: sizes in keyboard.kv are for a 412x915 phone
    session = ObjectProperty(None, allownone=True)

    def __init__(self, model_dir: str | Path, user_dir: str | Path | None = None,
                 learner_config: LearnerConfig = LearnerConfig(), **kwargs):
        super().__init__(**kwargs)
        self.model_dir = Path(model_dir)
        self._user_dir = Path(user_dir) if user_dir is not None else None
        self.learner_config = learner_config
        self._notice_event = None  # the Clock event that hides a tap's banner

    # -- start and stop ---------------------------------------------------------

    def build(self):
        from kivy.core.window import Window

        fit_window(Window)
        Window.clearcolor = (0.93, 0.94, 0.95, 1)
        Window.bind(on_key_down=self._on_key_down, on_textinput=self._on_textinput,
                    size=self._on_window_size)
        self._on_window_size(Window, Window.size)
        user_dir = self._user_dir or self.default_user_dir()
        try:
            make_private_dir(user_dir)
            self.session = KeyboardSession.open(self.model_dir, user_dir,
                                                learner_config=self.learner_config,
                                                on_learner_update=self._learner_updated)
        except ModelDirError as e:
            self.problem = missing_model_help(self.model_dir, str(e))
            self.screen = "no_model"
        except OSError as e:
            self.problem_title = "No private folder"
            self.problem = (f"The keyboard cannot create its private folder {user_dir} ({e}).\n\n"
                            "Start it with a folder it can write: fedkb app --user-dir DIR")
            self.screen = "no_model"
        else:
            self.model_text = "\n".join(describe_model(self.session.predictor.model_card))
            self._show()
        return super().build()

    def default_user_dir(self) -> Path:
        """Kivy's `user_data_dir`, without its crash where ~/.config does not exist yet.

        On Linux that is $XDG_CONFIG_HOME/fedkb or ~/.config/fedkb, and Kivy
        creates only the last level; `build` creates what is missing, 0700.
        """
        if platform == "linux":
            return Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / self.name
        return Path(self.user_data_dir)

    def on_stop(self) -> None:
        if self.session is not None:
            self.session.close()

    def _on_window_size(self, _window, size) -> None:
        self.scale = size[1] / PHONE_SIZE[1]

    # -- what the user does -------------------------------------------------------

    def press(self, key: str) -> None:
        """A tap on an on-screen key."""
        self.session.press(key)
        self._show()

    def tap_suggestion(self, slot: int) -> None:
        self.session.tap_suggestion(slot)
        self._show()

    def set_learning(self, on: bool) -> None:
        if self.session is not None and on != self.session.learner.learning:
            self.session.learner.set_learning(on)
            self._show()

    def personalize_now(self) -> None:
        if not self.session.learner.personalize_now():
            self.flash("Nothing to learn yet: send a few messages with learning on.")
        self._show()

    def forget(self) -> None:
        self.session.forget()
        self.flash("Deleted: your messages, stored ones and on screen, and your personal "
                   "weights. Suggestions come from the shared model.")
        self._show()

    def flash(self, text: str) -> None:
        """A banner that goes away by itself after NOTICE_SECONDS (or when tapped)."""
        self.dismiss_notice()
        self.notice = text
        self._notice_event = Clock.schedule_once(self.dismiss_notice, NOTICE_SECONDS)

    def show(self, screen: str) -> None:
        self.screen = screen

    def on_screen(self, _app, screen: str) -> None:
        # A ScreenManager's `current` cannot be bound in kv: it is set before its screens exist.
        if self.root is not None:
            self.root.current = screen

    def dismiss_notice(self, *_args) -> None:
        self.notice = ""
        if self._notice_event is not None:
            self._notice_event.cancel()
            self._notice_event = None

    def _on_textinput(self, _window, text: str) -> None:
        """Text from a physical keyboard."""
        if self.session is not None and self.screen == "keyboard":
            self.session.type_text(text)
            self._show()

    def _on_key_down(self, _window, key: int, _scancode, _codepoint, modifiers) -> bool:
        """Physical keys that type no text: Backspace (Ctrl: a word), Enter (send), Escape (back).

        Escape never quits while there is a conversation (Kivy's exit_on_escape
        would): it leaves the info panel, or hides the banner.
        """
        if key == KEY_ESCAPE and self.session is not None:
            if self.screen == "info":
                self.screen = "keyboard"
            self.dismiss_notice()
            return True
        if self.session is None or self.screen != "keyboard":
            return False
        if key == KEY_BACKSPACE:
            if "ctrl" in modifiers:
                self.session.delete_word()
            else:
                self.session.backspace()
        elif key in (KEY_ENTER, KEY_KP_ENTER):
            self.session.send()
        else:
            return False
        self._show()
        return True

    # -- showing the session ------------------------------------------------------

    def _show(self) -> None:
        """Copies the session's state into the properties keyboard.kv binds to (main thread only)."""
        session = self.session
        keyboard, learner = session.keyboard, session.learner
        self.text = keyboard.text
        self.suggestions = list(session.suggestions)
        rows = [list(row) for row in keyboard.rows]
        if rows != self.rows:
            self.rows = rows
        self.key_labels = {key: keyboard.label(key) for row in keyboard.rows for key in row}
        self.shift = keyboard.shift.value
        if len(session.conversation) != len(self.conversation):
            self.conversation = list(session.conversation)
        self.learning = learner.learning
        self.busy = learner.busy
        self.personalized = learner.personalized
        self.personal_text = "\n".join(describe_personal(
            learner.stats, learning=learner.learning, personalized=learner.personalized,
            stored_messages=len(learner.messages), busy=learner.busy,
            refit_pending=learner.refit_pending, min_messages=learner.config.min_messages)
        ) + "\n\n" + HIT_EXPLANATION
        if learner.notices:
            self.notice = "\n".join(learner.notices)
            learner.notices.clear()

    @mainthread
    def _learner_updated(self) -> None:
        """Called by the learner's worker thread; runs on the main thread."""
        self.session.refresh_suggestions()
        self._show()


def is_named_key(key: str) -> bool:
    """For keyboard.kv: named keys (shift, space, ...) are drawn differently from letters."""
    return key in NAMED_KEYS


def fit_window(window) -> None:
    """Sizes the window like a phone in portrait, scaled down to fit the screen.

    Kivy has no API for the screen size, so ask the SDL2 library Kivy ships
    and has already initialized; if that fails, keep the phone size.
    """
    width, height = PHONE_SIZE
    screen = _desktop_size()
    if screen is not None:
        scale = min(1.0, SCREEN_MARGIN * screen[0] / width, SCREEN_MARGIN * screen[1] / height)
        # A width in multiples of 8: GL reads screenshots in rows aligned to 4 bytes or more.
        width, height = int(width * scale) // 8 * 8, round(height * scale)
    window.size = (width, height)


def _desktop_size() -> tuple[int, int] | None:
    class DisplayMode(ctypes.Structure):
        _fields_ = [("format", ctypes.c_uint32), ("w", ctypes.c_int), ("h", ctypes.c_int),
                    ("refresh_rate", ctypes.c_int), ("driverdata", ctypes.c_void_p)]

    import kivy

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(kivy.__file__)), "Kivy.libs",
                                  "libSDL2-*.so*"))
    try:
        sdl = ctypes.CDLL(libs[0] if libs else "libSDL2-2.0.so.0")
        mode = DisplayMode()
        if sdl.SDL_GetDesktopDisplayMode(0, ctypes.byref(mode)) != 0 or mode.w <= 0:
            return None
    except (OSError, AttributeError):
        return None
    return mode.w, mode.h


def run_app(model_dir: str | Path, user_dir: str | Path | None = None) -> int:
    """`fedkb app`: opens the window and returns when it is closed."""
    FedKBApp(model_dir, user_dir).run()
    return 0


def has_display() -> bool:
    """False on a Linux machine without X11 or Wayland, where no window can open."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
