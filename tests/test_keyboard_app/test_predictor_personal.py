"""Opt-in learning on the device: training examples, train steps, saving and restoring."""

import math

import numpy as np
import pytest

from datasets.tokenizer import split_context
from datasets.vocab import BOS_ID, PAD_ID
from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.predictor import ModelDirError, PersonalWeightsError, Predictor

# Words of the tiny vocabulary; the synthetic language never puts "order" after "about the".
PHRASE = "tell me about the order"


@pytest.fixture
def predictor(tiny_model_dir) -> Predictor:
    """A fresh predictor per test: training changes it."""
    return Predictor(tiny_model_dir)


def rank(predictor: Predictor, context: np.ndarray, target: int) -> int:
    logprobs = predictor.logprobs(context)
    return int(np.sum(logprobs > logprobs[target]))


def test_training_examples_are_what_suggest_sees_while_typing(predictor):
    text = "Tell me about it. Is it the way?"
    contexts, targets = predictor.training_examples(text)
    words = text.split(" ")
    # Each word typed after a space: its context is what suggest reads at that point.
    for n in range(1, len(words)):
        before = " ".join(words[:n]) + " "
        expected = predictor._context_ids(predictor.vocab.encode(split_context(before)[0]))
        target = predictor.vocab.id(words[n].lower().strip(".?"))
        rows = [i for i in range(len(targets)) if np.array_equal(contexts[i], expected)]
        assert rows and targets[rows[0]] == target, before
    assert contexts.shape == (len(targets), predictor.context_len) and contexts.dtype == np.int32
    assert targets.dtype == np.int32 and PAD_ID not in targets and BOS_ID not in targets
    assert len(targets) == 12  # 8 words, "." and "?", 2 <eos>; never the 2 <bos>
    assert predictor.vocab.decode(targets[-2:]) == ["?", "<eos>"]


def test_training_examples_of_empty_text_are_empty(predictor):
    contexts, targets = predictor.training_examples("")
    assert contexts.shape == (0, predictor.context_len) and targets.shape == (0,)


def test_a_repeated_phrase_moves_its_next_word_to_the_top_within_50_steps(predictor):
    contexts, targets = predictor.training_examples(PHRASE)
    context, target = contexts[4], targets[4]  # "... about the" -> "order"
    assert predictor.vocab.tokens[target] == "order"
    assert rank(predictor, context, target) > 20
    batch = (np.repeat(context[None], predictor.train_batch_size, axis=0),
             np.repeat(target, predictor.train_batch_size))
    losses = []
    for _ in range(50):
        losses.append(predictor.train_step(*batch))
        if rank(predictor, context, target) == 0:
            break
    assert rank(predictor, context, target) == 0
    assert losses[-1] < losses[0]
    assert predictor.suggest("Tell me about the ")[0] == "order"


def test_ignored_rows_change_nothing(predictor):
    B, T = predictor.train_batch_size, predictor.context_len
    before = predictor.logprobs([BOS_ID])
    loss = predictor.train_step(np.full([B, T], PAD_ID), np.full([B], PAD_ID))
    assert loss == 0.0
    assert np.array_equal(predictor.logprobs([BOS_ID]), before)


def test_personal_weights_round_trip_exactly_into_a_fresh_predictor(predictor, tiny_model_dir):
    initial = predictor.get_personal()
    assert not initial["bias"].any() and not initial["adapter_up"].any()  # the federated model
    original = [predictor.suggest(t, k=5) for t in ("", "tell me about the ", "about th")]
    predictor.fine_tune([PHRASE] * 20, epochs=2)
    trained = predictor.get_personal()
    assert trained["bias"].any() and trained["adapter_up"].any()
    suggestions = [predictor.suggest(t, k=5) for t in ("", "tell me about the ", "about th")]
    assert suggestions != original

    predictor.set_personal(trained)
    again = predictor.get_personal()
    assert all(np.array_equal(again[name], trained[name]) for name in trained)

    fresh = Predictor(tiny_model_dir)
    fresh.set_personal(trained)
    assert [fresh.suggest(t, k=5) for t in ("", "tell me about the ", "about th")] == suggestions
    context = fresh.training_examples(PHRASE)[0][4]
    assert np.array_equal(fresh.logprobs(context), predictor.logprobs(context))

    predictor.reset_personal()
    assert [predictor.suggest(t, k=5) for t in ("", "tell me about the ", "about th")] == original
    assert np.array_equal(predictor.logprobs(context), Predictor(tiny_model_dir).logprobs(context))


def test_fine_tune_learns_the_users_phrases(predictor):
    contexts, targets = predictor.training_examples(PHRASE)
    before = np.mean([predictor.logprobs(c)[t] for c, t in zip(contexts, targets)])
    loss = predictor.fine_tune([PHRASE, "tell me more about it."], epochs=3)
    after = np.mean([predictor.logprobs(c)[t] for c, t in zip(contexts, targets)])
    assert math.isfinite(loss) and after > before
    assert math.isnan(predictor.fine_tune(["", "   "]))


def test_set_personal_refuses_weights_of_another_model(predictor):
    good = predictor.get_personal()
    bad_inputs = [
        {k: v for k, v in good.items() if k != "bias"},
        {**good, "extra": good["bias"]},
        {**good, "bias": good["bias"][:-1]},
        {**good, "adapter_up": good["adapter_up"].T},
        {**good, "bias": good["bias"].astype(np.float64)},
        {**good, "bias": np.full_like(good["bias"], np.nan)},
    ]
    for weights in bad_inputs:
        with pytest.raises(PersonalWeightsError) as info:
            predictor.set_personal(weights)
        assert isinstance(info.value, ModelDirError) and isinstance(info.value, ValueError)
    assert all(np.array_equal(predictor.get_personal()[k], good[k]) for k in good)


def test_train_step_checks_its_batch(predictor):
    B, T, V = predictor.train_batch_size, predictor.context_len, len(predictor.vocab)
    with pytest.raises(ValueError, match=f"contexts \\[{B}, {T}\\]"):
        predictor.train_step(np.zeros([B - 1, T], np.int32), np.zeros([B - 1], np.int32))
    with pytest.raises(ValueError, match="token ids"):
        predictor.train_step(np.zeros([B, T], np.int32), np.full([B], V, np.int32))
    with pytest.raises(ValueError, match="token ids"):
        predictor.train_step(np.zeros([B, T], np.float32), np.zeros([B], np.int32))


# A name the tiny vocabulary does not have: only the user's own words can suggest it.
NAME = "zorblat"


def test_the_users_own_words_suggest_a_name_the_model_does_not_know(predictor):
    from models.user_history import HistoryConfig, UserHistory

    assert predictor.vocab.id(NAME) == predictor.vocab.id("<oov>")
    context = "tell me about "
    shared = predictor.suggest(context, 3)
    assert NAME not in predictor.suggest(context, 10) and predictor.suggest("zo", 3) == []

    history = UserHistory([f"tell me about {NAME}"] * 30, HistoryConfig(weight=0.5, half_at=50))
    predictor.set_history(history)
    assert predictor.suggest(context, 3)[0] == NAME  # after the same word: first
    assert predictor.suggest("zo", 3) == [NAME]  # completing it
    history.add(f"tell me about {NAME}s")  # counted at once, no retraining
    assert f"{NAME}s" in predictor.suggest("zorblats"[:6], 3)

    predictor.set_history(UserHistory([], HistoryConfig()))  # nothing counted: the model alone
    assert predictor.suggest(context, 3) == shared
    predictor.set_history(None)
    assert predictor.suggest(context, 3) == shared


def test_the_users_longer_phrases_win_over_their_word_pairs():
    from models.user_history import HistoryConfig, UserHistory

    messages = ["see you at the station"] * 3 + ["on the game tonight"] * 5
    pairs = UserHistory(messages, HistoryConfig(order=2))
    triples = UserHistory(messages, HistoryConfig(order=3))
    before = ["<bos>", "meet", "me", "at", "the"]
    assert pairs.candidates(before, "")[0] == "game"  # after "the": "game" 5 times, "station" 3
    assert triples.candidates(before, "")[0] == "station"  # after "at the": only "station"
    assert triples.probability("station", before) > triples.probability("game", before)
    assert triples.probability("station", ["<bos>", "on", "the"]) < triples.probability(
        "game", ["<bos>", "on", "the"])
    assert triples.candidates(before, "g") == ["game"]  # completing: the user's word, any context
    # After a context the user never wrote, their words say nothing about the next word; while
    # they type one, how often they write it does: 3 of their 35 words.
    unseen = ["<bos>", "unseen", "words"]
    assert triples.probability("station", unseen) == 0 and triples.candidates(unseen, "") == []
    assert triples.probability("station", unseen, "st") == pytest.approx(3 / 35)
