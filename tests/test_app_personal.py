"""Opt-in personalization on the app core, with a real tiny model: what is stored, learned and forgotten."""

import json
import os
import stat
import threading

import numpy as np
import pytest

from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.keyboard import SPACE
from keyboard_app.personal import (MESSAGES_FILE, STATE_FILE, WEIGHTS_FILE, LearnerConfig,
                                   PersonalLearner)
from keyboard_app.session import PERSONAL_SUBDIR, KeyboardSession

# An unusual phrase for the tiny model: its language never puts "order" after "about the".
PHRASE = "Tell me about the order."
CONTEXT = "Please tell me about the "
UNUSUAL = "order"


def open_session(model_dir, user_dir, **config) -> KeyboardSession:
    return KeyboardSession.open(model_dir, user_dir, learner_config=LearnerConfig(**config))


def send(session: KeyboardSession, text: str) -> None:
    """Types `text` on the on-screen keys (letters lowercase: the keyboard capitalizes) and sends it."""
    for char in text.lower():
        session.press(SPACE if char == " " else char)
    session.send()


def ranked_after(session: KeyboardSession, text: str, k: int = 3) -> list[str]:
    return session.predictor.suggest(text, k)


@pytest.fixture
def user_dir(tmp_path):
    return tmp_path / "user"


def test_learning_is_off_by_default_and_nothing_is_written(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir)
    assert not session.learner.learning
    for _ in range(6):
        send(session, PHRASE)
    session.close()
    assert session.conversation == ["Tell me about the order."] * 6
    assert not user_dir.exists()


def test_opt_in_stores_messages_privately_and_opt_out_stops_at_once(tiny_model_dir, user_dir):
    old_umask = os.umask(0)  # the most permissive umask: the learner must still lock it down
    try:
        session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
        send(session, "before opting in")
        session.learner.set_learning(True)
        send(session, "first private message")
        send(session, "second one")
        session.learner.set_learning(False)
        send(session, "after opting out")
        session.close()
    finally:
        os.umask(old_umask)
    data_dir = user_dir / PERSONAL_SUBDIR
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    lines = (data_dir / MESSAGES_FILE).read_text("utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["First private message", "Second one"]
    assert session.learner.messages == ["First private message", "Second one"]
    assert json.loads((data_dir / STATE_FILE).read_text())["learning"] is False


def test_a_repeated_unusual_phrase_is_learned_and_forgotten(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=5)
    federated = ranked_after(session, CONTEXT, 10)
    assert UNUSUAL not in federated

    session.learner.set_learning(True)
    for _ in range(5):
        send(session, PHRASE)  # the fifth message starts a background pass
    assert session.learner.wait(timeout=60)
    assert session.learner.personalized and session.learner.stats.messages_learned == 5
    assert ranked_after(session, CONTEXT)[0] == UNUSUAL
    for char in CONTEXT.lower():
        session.press(SPACE if char == " " else char)
    assert session.suggestions[1] == UNUSUAL  # the middle slot: most likely

    session.forget()  # "Forget my data": also the messages on screen
    assert session.conversation == []
    assert UNUSUAL not in session.suggestions
    assert ranked_after(session, CONTEXT, 10) == federated
    assert not session.learner.personalized and session.learner.messages == []
    data_dir = user_dir / PERSONAL_SUBDIR
    assert sorted(p.name for p in data_dir.iterdir()) == [STATE_FILE]  # learning stays on
    assert session.learner.learning
    session.close()


def test_personalize_now_learns_from_fewer_than_n_messages(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=50)
    assert not session.learner.personalize_now()  # nothing stored
    session.learner.set_learning(True)
    for _ in range(3):
        send(session, PHRASE)
    assert not session.learner.busy and not session.learner.personalized
    assert session.learner.personalize_now()
    assert session.learner.wait(timeout=60)
    assert ranked_after(session, CONTEXT)[0] == UNUSUAL
    assert session.learner.stats.fine_tunes == 1 and np.isfinite(session.learner.stats.last_loss)
    session.close()


def test_personalization_survives_a_restart_of_the_core(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    session.learner.set_learning(True)
    for _ in range(4):
        send(session, PHRASE)
    result = session.learner.personalize_blocking()
    assert result.applied and result.messages == 4 and result.seconds > 0
    learned = ranked_after(session, CONTEXT, 5)
    stats = session.learner.stats
    session.close()

    again = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    assert again.learner.learning and again.learner.personalized
    assert again.learner.messages == [PHRASE] * 4
    assert ranked_after(again, CONTEXT, 5) == learned and learned[0] == UNUSUAL
    assert again.learner.stats == stats and again.learner.notices == []
    assert again.learner.unlearned == 0
    again.close()


def test_the_same_messages_give_the_same_weights(tiny_model_dir, tmp_path):
    weights = []
    for name in ("a", "b"):
        session = open_session(tiny_model_dir, tmp_path / name, fine_tune_every=100)
        session.learner.set_learning(True)
        for text in (PHRASE, "see you at the station", PHRASE):
            send(session, text)
        session.learner.personalize_blocking()
        weights.append(session.predictor.get_personal())
        session.close()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_pass_running_during_forget_is_discarded(tiny_model_dir, user_dir, monkeypatch):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    learner.set_learning(True)
    for _ in range(5):
        send(session, PHRASE)
    release = threading.Event()
    train = PersonalLearner._train

    def slow_train(self, messages):
        result = train(self, messages)
        release.wait(timeout=30)  # the pass has trained; forget() comes before it is applied
        return result

    monkeypatch.setattr(PersonalLearner, "_train", slow_train)
    assert learner.personalize_now() and learner.busy
    learner.forget()
    release.set()
    assert learner.wait(timeout=60)
    assert not learner.personalized and not (user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE).exists()
    assert UNUSUAL not in ranked_after(session, CONTEXT, 10)
    session.close()


def _personalized_dir(model_dir, user_dir) -> None:
    session = open_session(model_dir, user_dir, fine_tune_every=100)
    session.learner.set_learning(True)
    for _ in range(4):
        send(session, PHRASE)
    session.learner.personalize_blocking()
    session.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model_shapes", "other_model_hash"])
def test_damaged_personal_weights_are_moved_aside_and_the_federated_model_is_used(
        tiny_model_dir, user_dir, damage):
    _personalized_dir(tiny_model_dir, user_dir)
    path = user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        if damage == "other_model_shapes":
            arrays["bias"] = arrays["bias"][:-3]
        else:
            arrays["model_sha256"] = np.array("0" * 64)
        with path.open("wb") as f:
            np.savez(f, **arrays)

    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    assert not learner.personalized
    assert len(learner.notices) == 1 and str(path) in learner.notices[0]
    assert "moved to personal_weights.npz.damaged-" in learner.notices[0]
    assert not path.exists()
    assert len(list(path.parent.glob(WEIGHTS_FILE + ".damaged-*"))) == 1
    assert UNUSUAL not in ranked_after(session, CONTEXT, 10)
    assert learner.messages == [PHRASE] * 4 and learner.learning  # messages are intact
    assert learner.unlearned == 4  # the next pass learns them again
    learner.forget()  # forgetting also deletes the damaged copy
    assert sorted(p.name for p in path.parent.iterdir()) == [STATE_FILE]
    session.close()


def test_a_damaged_message_file_is_moved_aside_with_its_line(tiny_model_dir, user_dir):
    _personalized_dir(tiny_model_dir, user_dir)
    path = user_dir / PERSONAL_SUBDIR / MESSAGES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{broken", *lines[2:]]) + "\n")

    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    assert len(learner.notices) == 1 and "line 2" in learner.notices[0]
    assert str(path) in learner.notices[0] and not path.exists()
    assert learner.messages == []
    assert learner.personalized  # the weights themselves were fine
    send(session, "a new message")
    assert learner.messages == ["A new message"]
    session.close()


def test_a_damaged_state_file_is_moved_aside_and_learning_is_off(tiny_model_dir, user_dir):
    _personalized_dir(tiny_model_dir, user_dir)
    path = user_dir / PERSONAL_SUBDIR / STATE_FILE
    path.write_text('{"format": "fedkb-personal", "version": 1, "learning": "yes"}')
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    assert not session.learner.learning
    assert "learning is off" in session.learner.notices[0]
    assert list(path.parent.glob(STATE_FILE + ".damaged-*"))
    session.close()


def test_learner_config_is_checked():
    with pytest.raises(ValueError, match="fine_tune_every must be at least 1"):
        LearnerConfig(fine_tune_every=0)


# Issue 12: six similar messages and the personal layer takes over contexts that have nothing
# to do with them. Measured on the tiny model (LearnerConfig defaults): 1 of 11 unrelated
# contexts kept its top word. Fewer steps (1-3 epochs, no min_steps) kept at most 6 of 11 and
# then 3 x PHRASE no longer taught "order"; zeroing the adapter kept 11 but learned nothing;
# mixing in "anchor" examples (contexts sampled from the federated model, its own top word as
# target) kept 5 of 11. Not fixed yet.
SIMILAR = ["See you at the game.", "See you at the game later.", "Going to the game.",
           "See you at the game tonight.", "Meet me at the game.", "See you at the game!"]
UNRELATED = ["I would like to ", "What do you ", "It is a ", "We need to ", "This is the ",
             "How are ", "Can you ", "I think that ", "They said ", "My ", "Thanks for the "]


@pytest.mark.xfail(strict=True, reason="issue 12: a small pass still changes unrelated contexts")
def test_a_small_pass_keeps_the_federated_top_word_in_unrelated_contexts(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    federated = {context: ranked_after(session, context, 1) for context in UNRELATED}
    session.learner.set_learning(True)
    for text in SIMILAR:
        send(session, text)
    assert session.learner.personalize_blocking().applied
    assert ranked_after(session, "See you at the ")[0] == "game"
    assert {context: ranked_after(session, context, 1) for context in UNRELATED} == federated
    session.close()
