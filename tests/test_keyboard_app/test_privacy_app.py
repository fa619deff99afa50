"""The app stores nothing of what is typed while learning is off, on a real tiny model.

Learning is first switched on (so the private directory, the stored
messages and the personal weights exist), then off; a unique sentence typed
and sent after that must not appear in any file of the user directory, in
any of the encodings the app writes (UTF-8 JSON, escaped JSON, NumPy
archives), not even after a restart, a "personalize now" and a "forget".
"""

from __future__ import annotations

import json
from pathlib import Path

from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.keyboard import SPACE
from keyboard_app.personal import LearnerConfig
from keyboard_app.session import KeyboardSession

LEARNED = "Tell me about the order"
SECRET = "My locker code is Wexford Lane nine"


def type_and_send(session: KeyboardSession, text: str) -> None:
    for char in text.lower():
        session.press(SPACE if char == " " else char)
    session.send()


def encodings(text: str) -> list[bytes]:
    forms = {text, text.lower(), text.upper(), text.capitalize()}
    return sorted({f.encode(enc) for f in forms for enc in ("utf-8", "utf-16-le", "utf-32-le")}
                  | {json.dumps(f).encode() for f in forms})


def files_containing(root: Path, text: str) -> list[str]:
    needles = encodings(text) + encodings(text.split()[-2])  # the whole and its rarest word
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and any(n in p.read_bytes() for n in needles))


def test_text_typed_while_learning_is_off_is_never_written(tiny_model_dir, tmp_path):
    user_dir = tmp_path / "user"
    config = LearnerConfig(fine_tune_every=100, train_layer=True)  # the weights file is scanned too
    session = KeyboardSession.open(tiny_model_dir, user_dir, learner_config=config)
    session.learner.set_learning(True)
    for _ in range(3 + config.holdout_messages):  # the newest 10 are held back to check the layer
        type_and_send(session, LEARNED)
    assert session.learner.personalize_blocking().adopted
    session.learner.set_learning(False)
    for _ in range(3):
        type_and_send(session, SECRET)
    session.type_text(SECRET + " and more")  # typed, not sent
    session.close()
    # What learning on stored is there, and found by the scan (it can find text) ...
    assert files_containing(user_dir, LEARNED) == ["personal/messages.jsonl"]
    assert {p.name for p in (user_dir / "personal").iterdir()} >= {
        "messages.jsonl", "personal_weights.npz", "state.json"}
    # ... but nothing typed after switching it off.
    assert files_containing(user_dir, SECRET) == []

    again = KeyboardSession.open(tiny_model_dir, user_dir, learner_config=config)
    assert again.learner.messages == [LEARNED] * (3 + config.holdout_messages)
    assert not again.learner.learning
    type_and_send(again, SECRET)
    again.learner.personalize_blocking()
    again.learner.forget()
    type_and_send(again, SECRET)
    again.close()
    assert files_containing(user_dir, SECRET) == []
