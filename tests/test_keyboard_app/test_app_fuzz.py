"""The app core under 10,000 random key events, on a real tiny model (no window).

Random taps on whatever keys the current layer shows, physical-keyboard
text with arbitrary Unicode, backspace, word deletion, suggestion taps,
sends, and the learning switch, "personalize now" and "forget" now and
then, so background fine-tuning runs while typing goes on. A seeded RNG
makes every run the same; a failure names the event and the ones before it.
"""

from __future__ import annotations

import random

import pytest

from datasets.tokenizer import normalize
from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.keyboard import SEND, partial_word
from keyboard_app.personal import LearnerConfig
from keyboard_app.session import KeyboardSession

# Letters, digits, punctuation, apostrophes (typographic too), whitespace, accents,
# combining marks, CJK, right-to-left, emoji, a surrogate-free astral char, control chars.
ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?;:'\"-()@#\t\n"
            "\u2019\u2018\u00e9\u00fc\u00df\u0301\u0308\u4f60\u597d\u05e9\u05dc\u05d5\u05dd"
            "\U0001f600\U0001f44d\u200b\u00a0\x00\x7f")


def random_event(rng: random.Random, session: KeyboardSession):
    roll = rng.random()
    if roll < 0.55:
        key = rng.choice([k for row in session.keyboard.rows for k in row])
        return f"press {key!r}", lambda: session.press(key)
    if roll < 0.70:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6)))
        return f"type {text!r}", lambda: session.type_text(text)
    if roll < 0.80:
        slot = rng.randrange(3)
        return f"tap suggestion {slot}", lambda: session.tap_suggestion(slot)
    if roll < 0.87:
        return "backspace", session.backspace
    if roll < 0.91:
        return "delete word", session.delete_word
    if roll < 0.96:
        return "send", session.send
    if roll < 0.985:
        on = rng.random() < 0.6
        return f"learning {on}", lambda: session.learner.set_learning(on)
    if roll < 0.995:
        return "personalize now", session.learner.personalize_now
    return "forget", session.learner.forget


def check(session: KeyboardSession, vocab_words: set[str], event: str) -> None:
    slots = session.suggestions
    assert len(slots) == 3 and all(isinstance(s, str) for s in slots)
    typed = normalize(partial_word(session.text))
    for word in filter(None, slots):
        assert normalize(word) in vocab_words, word
        assert normalize(word).startswith(typed), (word, typed)
    if event == "send":
        assert session.text == ""


@pytest.mark.parametrize("seed, events", [
    (0, 10_000),
    pytest.param(1, 50_000, marks=pytest.mark.full),
])
def test_the_app_core_survives_random_key_events(tiny_model_dir, tmp_path, seed, events):
    config = LearnerConfig(fine_tune_every=20, epochs=1, min_steps=5, max_epochs=2)
    session = KeyboardSession.open(tiny_model_dir, tmp_path / "user", learner_config=config)
    vocab_words = {normalize(t) for t in session.predictor.vocab.tokens}
    rng = random.Random(seed)
    history: list[str] = []
    try:
        for i in range(events):
            name, action = random_event(rng, session)
            history.append(name)
            try:
                action()
                check(session, vocab_words, name)
            except Exception as e:
                raise AssertionError(f"event {i} ({name}) after {history[-20:-1]}: {e!r}") from e
        assert session.learner.wait(timeout=300)
    finally:
        session.close()
    assert len(session.conversation) > events // 200  # sends happened, with text
    assert all(m and m == m.strip() for m in session.conversation)
    assert SEND in [k for row in session.keyboard.rows for k in row]

    again = KeyboardSession.open(tiny_model_dir, tmp_path / "user", learner_config=config)
    assert again.learner.notices == []  # everything it stored reads back cleanly
    assert again.learner.learning == session.learner.learning
    again.close()
