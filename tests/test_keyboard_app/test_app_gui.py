"""The Kivy app in a real window (Xvfb in CI), driven by real touches on its widgets.

Kivy creates its window once per process, so each scenario runs in a
subprocess: this file run as a script (`python tests/test_keyboard_app/test_app_gui.py
SCENARIO ...`) opens the app, plays the scenario one step per frame with
Clock-scheduled steps, and writes what it saw to a JSON file that the tests
below check. The same process records socket audit events and whether
TensorFlow was imported.

Without a display the tests are skipped with a reason: run them under
xvfb-run (`make test` does). `FEDKB_UPDATE_SCREENSHOT=1` also copies the
screenshot to docs/app.png for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from factories import tiny_model_dir, tiny_run_dir  # noqa: F401

HERE = Path(__file__).resolve()
DOCS_SCREENSHOT = HERE.parents[2] / "docs" / "app.png"
RANDOM_TAPS = 1000
NO_DISPLAY = ("no display: the GUI tests need one; run them under xvfb-run, e.g. `make test` or "
              "xvfb-run -a -s \"-screen 0 1280x720x24 -ac +extension GLX\" .venv/bin/python -m pytest "
              "tests/test_keyboard_app/test_app_gui.py")

pytestmark = pytest.mark.skipif(
    sys.platform.startswith("linux")
    and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason=NO_DISPLAY)


def run_scenario(name: str, model_dir: Path, tmp_path: Path, *, user_dir: str | None = None,
                 env: dict | None = None) -> dict:
    """Runs this file as a script for one scenario; returns what it recorded.

    `user_dir` "-" starts the app without --user-dir (Kivy's user_data_dir).
    """
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "KIVY_NO_ARGS": "1", "KIVY_HOME": str(tmp_path / "kivy-home"),
           "KCFG_GRAPHICS_MAXFPS": "0", "KCFG_KIVY_LOG_LEVEL": "warning",
           "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset
    # Run as a script, this file finds tests/factories.py as pytest does: tests/ on the path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), env.get("PYTHONPATH")]))
    user_dir = user_dir or str(tmp_path / "user")
    proc = subprocess.run([sys.executable, str(HERE), name, str(model_dir), user_dir,
                           str(out)], env=env, capture_output=True, text=True,
                          timeout=600)  # only a hang guard: a loaded machine may be slow
    assert proc.returncode == 0, f"app exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    result = json.loads((out / "result.json").read_text())
    result["out"] = str(out)
    result["user_dir"] = user_dir
    return result


@pytest.fixture(scope="module")
def typing_run(tiny_model_dir, tmp_path_factory) -> dict:
    """One app run: typing, a suggestion, learning, sending, info panel, screenshot, random taps."""
    return run_scenario("typing", tiny_model_dir, tmp_path_factory.mktemp("gui-typing"))


def test_tapping_keys_types_a_sentence_with_a_capital(typing_run):
    assert typing_run["start_suggestions"][1][:1].isupper()
    assert typing_run["after_typing"] == "I think th"
    partial_strip = [w for w in typing_run["strip_while_typing_th"] if w]
    assert partial_strip and all(w.startswith("th") for w in partial_strip)


def test_tapping_a_suggestion_completes_the_word(typing_run):
    word = typing_run["tapped_suggestion"]
    assert word.startswith("th")
    assert typing_run["after_suggestion"] == f"I think {word} "


def test_send_key_moves_the_text_to_the_conversation(typing_run):
    assert typing_run["conversation_after_send"] == [typing_run["after_suggestion"].strip()]
    assert typing_run["text_after_send"] == ""
    assert typing_run["bubbles_after_send"] == 1


def test_physical_keyboard_types_deletes_and_sends(typing_run):
    assert typing_run["physical_typed"] == "Hello worlds"
    assert typing_run["physical_after_backspace"] == "Hello world"
    assert typing_run["physical_after_ctrl_backspace"] == "Hello "
    assert typing_run["physical_sent"] == "Hello"


def test_the_switch_turns_learning_on_and_a_background_pass_updates_the_panel(typing_run):
    assert typing_run["learning_before_switch"] is False
    assert typing_run["learning_after_switch"] is True
    assert typing_run["personal_dir_mode"] == oct(0o700)
    assert typing_run["stored_messages"] == typing_run["messages_sent_while_learning"] >= 15
    assert typing_run["fine_tunes"] >= 1
    assert "Messages learned: " in typing_run["personal_text"]
    assert "(personalized" in typing_run["personal_text"]
    assert "Suggestions: personalized on your " in typing_run["personal_text"]
    # The phrase sent fifteen times: its word, which the shared model never offers here, is in
    # the strip (the user's own words, mixed in; LearnerConfig trains no personal layer).
    assert "order" in typing_run["screenshot_suggestions"]
    assert typing_run["learning_after_switch_off"] is False
    assert typing_run["stored_after_switch_off"] == typing_run["stored_before_switch_off"]


def test_info_panel_shows_the_model_card_in_plain_words(typing_run):
    assert typing_run["info_screen"] == "info"
    assert "Not trained federatedly" in typing_run["model_text"]
    assert "Privacy:" in typing_run["model_text"]


def test_screenshots_are_saved(typing_run):
    for name in ("app.png", "info.png"):
        path = Path(typing_run["out"]) / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 5000
    assert all(typing_run["screenshot_suggestions"])
    if os.environ.get("FEDKB_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(Path(typing_run["out"]) / "app.png", DOCS_SCREENSHOT)


def test_a_thousand_random_taps_on_keys_and_suggestions_do_not_crash_it(typing_run):
    assert typing_run["random_taps"] == RANDOM_TAPS
    assert typing_run["random_kinds"]["key"] > 500 and typing_run["random_kinds"]["suggestion"] > 100
    assert typing_run["consistent_after_random_taps"] is True


def test_the_app_opens_no_socket_and_never_imports_tensorflow(typing_run):
    assert typing_run["socket_events"] == []
    assert typing_run["tensorflow_imported"] is False


def test_a_missing_model_shows_how_to_get_one(tmp_path):
    result = run_scenario("no_model", tmp_path / "no-such-model", tmp_path)
    assert result["screen"] == "no_model"
    assert "fedkb demo" in result["problem"] and "fedkb export" in result["problem"]
    assert "model directory not found" in result["problem"]
    assert (Path(result["out"]) / "no_model.png").stat().st_size > 2000


def test_a_fresh_home_without_dot_config_opens_the_keyboard(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": None}
    result = run_scenario("fresh_home", tiny_model_dir, tmp_path, user_dir="-", env=env)
    assert result["screen"] == "keyboard" and result["suggestions"][1]
    for directory in (home / ".config", home / ".config" / "fedkb"):
        assert oct(stat.S_IMODE(directory.stat().st_mode)) == oct(0o700), directory
    assert result["personal_dir"] == str(home / ".config" / "fedkb" / "personal")


@pytest.fixture(scope="module")
def conversation_run(tiny_model_dir, tmp_path_factory) -> dict:
    """Many messages, Escape, then "Forget my data"."""
    return run_scenario("conversation", tiny_model_dir, tmp_path_factory.mktemp("gui-conversation"))


def test_a_full_message_list_scrolls_to_the_newest_message(conversation_run):
    assert conversation_run["overflowing"]  # more messages than the area shows
    assert conversation_run["newest_visible"] and conversation_run["scroll_y"] == 0
    assert conversation_run["oldest_visible"] is False


def test_escape_does_not_quit_or_lose_the_conversation(conversation_run):
    assert conversation_run["after_escape"] == {"screen": "keyboard", "messages": 12}
    assert conversation_run["escape_from_info"] == "keyboard"


def test_forget_clears_the_conversation_and_its_banner_goes_away(conversation_run):
    assert conversation_run["bubbles_after_forget"] == 0
    assert conversation_run["conversation_after_forget"] == []
    assert conversation_run["notice_after_forget"].startswith("Deleted")
    assert conversation_run["notice_timeout"] == 5
    assert conversation_run["notice_after_its_timeout"] == ""


# -- the scenarios, run in the subprocess ------------------------------------------


def _scenario_main(name: str, model_dir: str, user_dir: str, out_dir: str) -> None:
    socket_events: list[str] = []

    def audit(event, args):
        if event.startswith("socket."):
            socket_events.append(f"{event} {args!r}"[:200])

    sys.addaudithook(audit)

    import random

    from kivy.clock import Clock
    from kivy.core.window import Window
    from kivy.tests.common import UnitTestTouch

    from keyboard_app.app import FedKBApp, KeyButton, MessageBubble, SuggestionButton
    from keyboard_app.personal import LearnerConfig

    out = Path(out_dir)
    result: dict = {}
    app = FedKBApp(model_dir, None if user_dir == "-" else user_dir,
                   learner_config=LearnerConfig(fine_tune_every=5))

    def widgets(kind):
        screen = app.root.current_screen
        return [w for w in screen.walk() if isinstance(w, kind)]

    def tap(widget) -> None:
        touch = UnitTestTouch(*widget.to_window(*widget.center))
        touch.touch_down()
        touch.touch_up()

    def key(name: str):
        return next(w for w in widgets(KeyButton) if w.key == name)

    def tap_keys(text: str):
        for char in text:
            tap(key("space" if char == " " else char))
            yield

    def screenshot(filename: str) -> None:
        saved = Window.screenshot(str(out / filename))  # Kivy adds a counter: name0001.png
        os.replace(saved, out / filename)

    def frames(n: int):
        for _ in range(n):
            yield

    def settled(widget, limit: int = 300):
        """Frames until the widget's layout stops changing (by frames, not by the clock: a slow machine waits longer)."""
        last = None
        for _ in range(limit):
            now = (tuple(widget.size), tuple(tuple(child.size) + tuple(child.pos) for child in widget.children))
            if now == last:
                return
            last = now
            yield
        raise AssertionError(f"{type(widget).__name__}'s layout still changed after {limit} frames")

    def typing():
        yield from frames(2)
        result["start_suggestions"] = list(app.suggestions)
        yield from tap_keys("i think th")
        result["after_typing"] = app.text
        result["strip_while_typing_th"] = list(app.suggestions)
        middle = next(w for w in widgets(SuggestionButton) if w.slot == 1)
        result["tapped_suggestion"] = middle.text
        tap(middle)
        yield
        result["after_suggestion"] = app.text
        tap(key("send"))
        yield from frames(2)
        result["conversation_after_send"] = list(app.conversation)
        result["text_after_send"] = app.text
        result["bubbles_after_send"] = sum(type(w).__name__ == "MessageBubble"
                                          for w in app.root.current_screen.walk())

        for char in "Hello worlds":  # a physical keyboard: text input events and special keys
            Window.dispatch("on_textinput", char)
        result["physical_typed"] = app.text
        Window.dispatch("on_key_down", 8, 42, None, [])
        result["physical_after_backspace"] = app.text
        Window.dispatch("on_key_down", 8, 42, None, ["ctrl"])
        result["physical_after_ctrl_backspace"] = app.text
        Window.dispatch("on_key_down", 13, 40, None, [])
        result["physical_sent"] = app.conversation[-1]
        yield

        result["learning_before_switch"] = app.learning
        switch = next(w for w in app.root.current_screen.walk() if type(w).__name__ == "Switch")
        tap(switch)
        yield from frames(2)
        result["learning_after_switch"] = app.session.learner.learning
        result["personal_dir_mode"] = oct(stat.S_IMODE(
            (Path(user_dir) / "personal").stat().st_mode))
        sent = 0
        for _ in range(15):  # five to learn from, the ten newest held back to check the layer
            yield from tap_keys("tell me about the order")
            tap(key("send"))
            sent += 1
            yield
        result["messages_sent_while_learning"] = sent
        # The background pass reports through Clock (main thread). Waited for by its event,
        # however long a loaded machine takes; run_scenario's timeout catches a hang.
        while app.busy or app.session.learner.stats.fine_tunes == 0:
            yield
        yield
        result["stored_messages"] = len(app.session.learner.messages)
        result["fine_tunes"] = app.session.learner.stats.fine_tunes
        result["personal_text"] = app.personal_text

        tap(next(w for w in app.root.current_screen.walk() if getattr(w, "text", None) == "Info"))
        yield from frames(2)
        result["info_screen"] = app.root.current
        result["model_text"] = app.model_text
        screenshot("info.png")
        app.show("keyboard")
        yield from frames(2)

        yield from tap_keys("see you. tell me about the ")  # the README's picture: a learned word
        yield from frames(2)
        result["screenshot_suggestions"] = list(app.suggestions)
        screenshot("app.png")

        rng = random.Random(0)
        kinds = {"key": 0, "suggestion": 0}
        for n in range(RANDOM_TAPS):
            if rng.random() < 0.8:
                target = rng.choice(widgets(KeyButton))
                kinds["key"] += 1
            else:
                target = rng.choice(widgets(SuggestionButton))
                kinds["suggestion"] += 1
            tap(target)
            # A few taps per frame; a new layer's keys are placed in the next frame.
            if n % 5 == 4 or getattr(target, "key", "") == "layer":
                yield
        result["random_taps"] = sum(kinds.values())
        result["random_kinds"] = kinds
        app.session.learner.wait(timeout=300)
        yield from frames(2)
        result["consistent_after_random_taps"] = (
            app.root.current == "keyboard" and app.text == app.session.text
            and list(app.suggestions) == list(app.session.suggestions))

        tap(switch)
        yield from frames(2)
        result["learning_after_switch_off"] = app.session.learner.learning
        stored = len(app.session.learner.messages)
        yield from tap_keys("not stored")
        tap(key("send"))
        yield
        result["stored_after_switch_off"] = len(app.session.learner.messages)
        result["stored_before_switch_off"] = stored

    def no_model():
        yield from frames(2)
        result["screen"] = app.root.current
        result["problem"] = app.problem
        screenshot("no_model.png")

    def fresh_home():
        yield from frames(2)
        result["screen"] = app.root.current
        result["suggestions"] = list(app.suggestions)
        result["personal_dir"] = str(app.session.learner.data_dir)

    def escape() -> None:
        """An Escape key as SDL delivers it: on_keyboard (Kivy's exit_on_escape) unless handled."""
        if not Window.dispatch("on_key_down", 27, 41, None, []):
            Window.dispatch("on_keyboard", 27, 41, None, [])

    def visible(widget, view) -> bool:
        bottom, top = widget.to_window(widget.x, widget.y)[1], widget.to_window(widget.x, widget.top)[1]
        return view.y - 1 <= bottom and top <= view.top + 1

    def conversation():
        yield from frames(2)
        view = next(w for w in app.root.current_screen.walk() if type(w).__name__ == "ScrollView")
        for n in range(12):
            if n == 11:
                view.scroll_y = 1  # the user scrolled up to the oldest message before sending the last
            yield from tap_keys("message " + "abcdefghijkl"[n])
            tap(key("send"))
            yield from frames(2)
        yield from settled(view.children[0])
        bubbles = {w.text: w for w in view.walk() if isinstance(w, MessageBubble)}
        result["overflowing"] = view.children[0].height > view.height
        result["newest_visible"] = visible(bubbles[app.conversation[-1]], view)
        result["oldest_visible"] = visible(bubbles[app.conversation[0]], view)
        result["scroll_y"] = view.scroll_y

        escape()
        yield from frames(2)
        result["after_escape"] = {"screen": app.root.current, "messages": len(app.conversation)}
        app.show("info")
        yield
        escape()
        yield
        result["escape_from_info"] = app.root.current

        app.forget()
        yield from frames(2)
        result["bubbles_after_forget"] = sum(isinstance(w, MessageBubble) for w in view.walk())
        result["conversation_after_forget"] = list(app.conversation)
        result["notice_after_forget"] = app.notice
        event = app._notice_event
        result["notice_timeout"] = event.timeout
        event.get_callback()(event.timeout)  # what the Clock runs NOTICE_SECONDS later
        result["notice_after_its_timeout"] = app.notice

    steps = {"typing": typing, "no_model": no_model, "fresh_home": fresh_home,
             "conversation": conversation}[name]()

    def step(_dt):
        try:
            next(steps)
        except StopIteration:
            app.stop()
            return False

    Clock.schedule_interval(step, 0)
    app.run()
    result["socket_events"] = socket_events
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    _scenario_main(*sys.argv[1:5])
