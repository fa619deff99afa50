"""The app stays on the device: no network connection, no TensorFlow, and `fedkb app` fails politely.

The core runs in a fresh Python process (the test process itself has
TensorFlow loaded by the model factory) with an audit hook that records
every socket operation. The GUI test checks the same for a real window.
"""

import json
import os
import subprocess
import sys
import textwrap

from factories import tiny_model_dir, tiny_run_dir  # noqa: F401

CORE_RUN = textwrap.dedent("""
    import json, sys
    events = []
    sys.addaudithook(lambda event, args: events.append(event) if event.startswith("socket.") else None)

    import fl_pipeline.cli, fl_pipeline.cli.commands  # the `fedkb app` import chain
    import keyboard_app.app  # Kivy without a window
    from keyboard_app.keyboard import SPACE
    from keyboard_app.personal import LearnerConfig
    from keyboard_app.session import KeyboardSession

    model_dir, user_dir = sys.argv[1], sys.argv[2]
    # 13 messages: 3 to learn from, the newest 10 held back to check the layer.
    session = KeyboardSession.open(model_dir, user_dir, learner_config=LearnerConfig(fine_tune_every=13))
    session.learner.set_learning(True)
    for _ in range(13):
        for char in "tell me about the order":
            session.press(SPACE if char == " " else char)
        session.tap_suggestion(1)
        session.send()
    session.learner.wait(timeout=300)
    learned = session.learner.stats.fine_tunes
    session.learner.forget()
    session.close()
    print(json.dumps({"socket_events": events, "tensorflow": "tensorflow" in sys.modules,
                      "fine_tunes": learned}))
""")


def test_core_and_app_modules_open_no_socket_and_never_import_tensorflow(tiny_model_dir, tmp_path):
    env = {**os.environ, "KIVY_NO_ARGS": "1", "KIVY_HOME": str(tmp_path / "kivy-home"),
           "KIVY_LOG_MODE": "PYTHON"}
    proc = subprocess.run([sys.executable, "-c", CORE_RUN, str(tiny_model_dir), str(tmp_path / "user")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["fine_tunes"] >= 1  # the background learner really ran
    assert result["socket_events"] == []
    assert result["tensorflow"] is False


def test_fedkb_app_without_a_display_says_how_to_run_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(KIVY_HOME=str(tmp_path / "kivy-home"))
    proc = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "app", "--model", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("fedkb app: error: no display") and "xvfb-run" in lines[-1]
