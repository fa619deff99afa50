"""Opt-in personalization on the app core, with a real tiny model: what is stored, learned and forgotten."""

import json
import os
import stat
import threading

import numpy as np
import pytest

from datasets.vocab import RESERVED_TOKENS
from factories import tiny_float_model_dir, tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.info import describe_suggestions
from keyboard_app.keyboard import SPACE
from keyboard_app.personal import (HISTORY, MESSAGES_FILE, NEW, SHARED, STATE_FILE, TOO_FEW,
                                   WEIGHTS_FILE, WITH_HISTORY, LearnerConfig, PersonalLearner)
from keyboard_app.predictor import Predictor
from keyboard_app.session import PERSONAL_SUBDIR, KeyboardSession

# An unusual phrase for the tiny model: its language never puts "order" after "about the".
PHRASE = "Tell me about the order."
CONTEXT = "Please tell me about the "
UNUSUAL = "order"
# A pass holds back the newest 10 messages (LearnerConfig.holdout_messages) to check that the
# new layer is never worse than the shared model: N + HELD messages train on N.
HELD = LearnerConfig().holdout_messages


def open_session(model_dir, user_dir, train_layer: bool = True, **config) -> KeyboardSession:
    """Most tests here check the personal layer's mechanics, so they switch it on (off by default)."""
    return KeyboardSession.open(model_dir, user_dir,
                                learner_config=LearnerConfig(train_layer=train_layer, **config))


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
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=5 + HELD)
    federated = ranked_after(session, CONTEXT, 10)
    assert UNUSUAL not in federated

    session.learner.set_learning(True)
    for _ in range(5 + HELD):
        send(session, PHRASE)  # the fifteenth message starts a background pass
    assert session.learner.wait(timeout=300)
    # The last pass trained on the 5 oldest and checked on the 10 newest: it saves keystrokes.
    assert session.learner.personalized and session.learner.stats.messages_learned == 5
    assert session.learner.stats.check == NEW
    assert session.learner.stats.ksr_personal > session.learner.stats.ksr_shared
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
    for _ in range(3 + HELD):
        send(session, PHRASE)
    assert not session.learner.busy and not session.learner.personalized
    assert session.learner.personalize_now()
    assert session.learner.wait(timeout=300)
    assert ranked_after(session, CONTEXT)[0] == UNUSUAL
    assert session.learner.stats.fine_tunes == 1 and np.isfinite(session.learner.stats.last_loss)
    session.close()


def test_personalization_survives_a_restart_of_the_core(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    session.learner.set_learning(True)
    for _ in range(4 + HELD):
        send(session, PHRASE)
    result = session.learner.personalize_blocking()
    assert result.adopted and result.messages == 4 and result.seconds > 0
    learned = ranked_after(session, CONTEXT, 5)
    stats = session.learner.stats
    session.close()

    again = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    assert again.learner.learning and again.learner.personalized
    assert again.learner.messages == [PHRASE] * (4 + HELD)
    assert ranked_after(again, CONTEXT, 5) == learned and learned[0] == UNUSUAL
    assert again.learner.stats == stats and again.learner.notices == []
    assert again.learner.unlearned == 0
    again.close()


def test_the_same_messages_give_the_same_weights(tiny_model_dir, tmp_path):
    weights = []
    for name in ("a", "b"):
        session = open_session(tiny_model_dir, tmp_path / name, fine_tune_every=100)
        session.learner.set_learning(True)
        for text in (PHRASE, "see you at the station", PHRASE, *[PHRASE] * HELD):
            send(session, text)
        assert session.learner.personalize_blocking().adopted
        weights.append(session.predictor.get_personal())
        session.close()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_pass_running_during_forget_is_discarded(tiny_model_dir, user_dir, monkeypatch):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    learner.set_learning(True)
    for _ in range(5 + HELD):
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
    assert learner.wait(timeout=300)
    assert not learner.personalized and not (user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE).exists()
    assert UNUSUAL not in ranked_after(session, CONTEXT, 10)
    session.close()


def _personalized_dir(model_dir, user_dir) -> None:
    session = open_session(model_dir, user_dir, fine_tune_every=100)
    session.learner.set_learning(True)
    for _ in range(4 + HELD):
        send(session, PHRASE)
    assert session.learner.personalize_blocking().adopted
    session.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model_shapes"])
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
        arrays["bias"] = arrays["bias"][:-3]
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
    assert learner.messages == [PHRASE] * (4 + HELD) and learner.learning  # messages are intact
    assert learner.unlearned == 4 + HELD  # the next pass learns them again
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


def test_a_user_whose_recent_messages_are_unlike_their_earlier_ones_keeps_the_shared_model(
        tiny_model_dir, user_dir):
    from factories import synthetic_texts

    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    learner.set_learning(True)
    for _ in range(5):
        send(session, PHRASE)
    words = session.predictor.vocab.tokens[len(RESERVED_TOKENS):]
    for text in synthetic_texts(words, HELD, seed=1):  # the shared model's own kind of text
        send(session, text)
    result = learner.personalize_blocking()
    assert result.applied and result.choice == SHARED and result.heldout == HELD
    assert result.keystrokes[NEW] > result.keystrokes[SHARED]  # the layer would cost keystrokes
    assert not learner.personalized and learner.stats.check == SHARED
    assert not (user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE).exists()
    assert UNUSUAL not in ranked_after(session, CONTEXT, 10)
    assert describe_suggestions(learner.stats, personalized=False, learning=True,
                                stored_messages=5 + HELD) == (
        "Suggestions: the shared model (personalizing saved no keystrokes on your latest "
        "10 messages, so it is not used).")
    session.close()


def test_too_few_messages_to_hold_back_keep_the_shared_model(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    learner.set_learning(True)
    for _ in range(HELD):  # all would be held back: nothing left to learn from
        send(session, PHRASE)
    result = learner.personalize_blocking()
    assert result.choice == TOO_FEW and result.messages == 0 and not result.adopted
    assert not learner.personalized and learner.stats.fine_tunes == 0
    assert not (user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE).exists()
    assert UNUSUAL not in ranked_after(session, CONTEXT, 10)
    assert describe_suggestions(learner.stats, personalized=False, learning=True,
                                stored_messages=HELD) == (
        "Suggestions: the shared model (personalizing needs 1 more message: your newest are "
        "held back to check it).")
    send(session, PHRASE)  # one more: one to learn from, ten to check on
    assert learner.personalize_blocking().adopted
    assert learner.personalized and ranked_after(session, CONTEXT)[0] == UNUSUAL
    assert describe_suggestions(learner.stats, personalized=True, learning=True,
                                stored_messages=HELD + 1).startswith(
        "Suggestions: personalized on your 1 messages, with your own words and a personal "
        "layer (+")
    session.close()


def test_the_panel_says_which_model_is_in_use_in_plain_words():
    from keyboard_app.personal import PersonalStats

    stats = PersonalStats(messages_learned=57, check=NEW, check_messages=12, ksr_shared=0.30,
                          ksr_personal=0.42)
    assert describe_suggestions(stats, personalized=True, learning=True, stored_messages=69) == (
        "Suggestions: personalized on your 57 messages, with your own words and a personal layer "
        "(+12% keystrokes saved on your latest 12).")
    words_only = PersonalStats(messages_learned=57, check=HISTORY, check_messages=12,
                               ksr_shared=0.30, ksr_personal=0.36)
    assert describe_suggestions(words_only, personalized=True, learning=True,
                                stored_messages=69) == (
        "Suggestions: personalized on your 57 messages, with your own words (+6% keystrokes "
        "saved on your latest 12).")
    assert describe_suggestions(PersonalStats(), personalized=False, learning=False,
                                stored_messages=0) == "Suggestions: the shared model."
    assert "a new one arrived" in describe_suggestions(
        PersonalStats(), personalized=False, learning=True, stored_messages=20, refit_pending=True)


def test_a_new_shared_model_triggers_a_re_fit_from_the_stored_messages(
        tiny_model_dir, tiny_float_model_dir, user_dir, monkeypatch):
    _personalized_dir(tiny_model_dir, user_dir)  # learned on the quantized model
    weights = user_dir / PERSONAL_SUBDIR / WEIGHTS_FILE
    release = threading.Event()
    train = PersonalLearner._train

    def held_train(self, messages):
        release.wait(timeout=30)  # the re-fit waits until the test has looked
        return train(self, messages)

    monkeypatch.setattr(PersonalLearner, "_train", held_train)
    session = open_session(tiny_float_model_dir, user_dir, fine_tune_every=100)  # "a new model"
    learner = session.learner
    try:
        assert learner.refit_pending and learner.busy  # started by itself: learning is on
        assert not learner.personalized and not weights.exists()  # no use on the new model
        assert len(learner.notices) == 1 and "A new shared model arrived" in learner.notices[0]
        assert "damaged" not in learner.notices[0]
        shared = Predictor(tiny_float_model_dir)
        assert ranked_after(session, CONTEXT, 10) == shared.suggest(CONTEXT, 10)
        assert describe_suggestions(learner.stats, personalized=False, learning=True,
                                    stored_messages=len(learner.messages),
                                    refit_pending=True).startswith(
            "Suggestions: the shared model (a new one arrived; your personal layer is being re-fitted")
    finally:
        release.set()
    assert learner.wait(timeout=300)
    assert not learner.refit_pending and learner.personalized and learner.stats.check == NEW
    assert learner.stats.messages_learned == 4 and ranked_after(session, CONTEXT)[0] == UNUSUAL
    with np.load(weights) as data:
        assert str(data["model_sha256"]) == session.predictor.model_card["file"]["sha256"]
    session.close()
    again = open_session(tiny_float_model_dir, user_dir, fine_tune_every=100)
    assert again.learner.personalized and not again.learner.refit_pending
    assert again.learner.notices == []
    again.close()


def test_forget_after_a_pass_leaves_no_file_and_the_shared_models_suggestions(
        tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    learner.set_learning(True)
    for _ in range(5 + HELD):
        send(session, PHRASE)
    assert learner.personalize_blocking().adopted
    assert ranked_after(session, CONTEXT)[0] == UNUSUAL
    learner.set_learning(False)
    session.forget()
    assert not (user_dir / PERSONAL_SUBDIR).exists()  # no file, no folder
    shared = Predictor(tiny_model_dir)
    for context in [CONTEXT, "", "See you at the ", "about th", *UNRELATED]:
        assert ranked_after(session, context, 10) == shared.suggest(context, 10), context
        ids = shared.training_examples(context + " x")[0][-1]
        assert np.array_equal(session.predictor.logprobs(ids), shared.logprobs(ids)), context
    session.close()
    assert not (user_dir / PERSONAL_SUBDIR).exists()


def test_the_users_own_names_are_learned_kept_and_forgotten(tiny_model_dir, user_dir):
    # Names the tiny vocabulary lacks: the personal layer cannot learn them, the user's words can.
    session = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    learner = session.learner
    assert ranked_after(session, "zo") == []
    learner.set_learning(True)
    for _ in range(5 + HELD):
        send(session, "Tell me about zorblat.")
    result = learner.personalize_blocking()
    assert result.choice in WITH_HISTORY and learner.personalized
    assert result.keystrokes[result.choice] < result.keystrokes[SHARED]
    assert ranked_after(session, "zo") == ["zorblat"]
    session.close()

    again = open_session(tiny_model_dir, user_dir, fine_tune_every=100)
    assert again.learner.personalized and ranked_after(again, "zo") == ["zorblat"]
    send(again, "quillok")  # counted as soon as it is sent, before any pass
    assert ranked_after(again, "qu") == ["quillok"]
    again.forget()
    assert ranked_after(again, "zo") == [] and ranked_after(again, "qu") == []
    assert not again.learner.personalized
    again.close()


def test_learner_config_is_checked():
    from models.user_history import HistoryConfig

    with pytest.raises(ValueError, match="fine_tune_every must be at least 1"):
        LearnerConfig(fine_tune_every=0)
    with pytest.raises(ValueError, match="history weight must be in"):
        HistoryConfig(weight=1.5)


# Issue 12: after six similar messages the personal layer took over contexts that have nothing
# to do with them ("the -> game" everywhere). Every setting of the layer measured on the tiny
# model (fewer steps, a smaller bias or adapter, distillation anchors toward the shared model)
# either kept the unrelated contexts or learned the phrase, never both: its adapter acts on the
# hidden state, which "This is the " shares with "at the ". On real chat it also helped no one
# (README, the personalization lever table), so the shipped learner trains no layer
# (LearnerConfig.train_layer) and learns the user's own words, which change only the
# contexts the user wrote.
SIMILAR = ["See you at the game.", "See you at the game later.", "Going to the game.",
           "See you at the game tonight.", "Meet me at the game.", "See you at the game!"]
# The issue's own two contexts among them. The user's words are counted after the last one or
# two tokens (Android's user history does the same), so a context ending in "you" may rightly
# offer their "at" ("See you at"): the unrelated contexts end in words used otherwise.
UNRELATED = ["I would like to ", "What do you think about ", "It is a ", "We need to ",
             "This is the ", "How are ", "Can you ", "I think that ", "They said ", "My ", "Thanks for the "]


def test_a_small_pass_keeps_the_federated_top_word_in_unrelated_contexts(tiny_model_dir, user_dir):
    session = open_session(tiny_model_dir, user_dir, train_layer=LearnerConfig().train_layer,
                           fine_tune_every=100)  # the learner as shipped
    federated = {context: ranked_after(session, context, 1) for context in UNRELATED}
    federated_strip = ranked_after(session, "See you at the ")
    session.learner.set_learning(True)
    for text in SIMILAR + SIMILAR + SIMILAR[:HELD - len(SIMILAR)]:  # six learned, ten held back
        send(session, text)
    result = session.learner.personalize_blocking()
    assert result.applied and result.choice in WITH_HISTORY and result.messages == len(SIMILAR)
    assert "game" not in federated_strip and "game" in ranked_after(session, "See you at the ")
    assert {context: ranked_after(session, context, 1) for context in UNRELATED} == federated
    session.close()
