"""The window-free app core on a real tiny exported model: suggestions while typing, sending, hit counts."""

import pytest

from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.info import describe_model, describe_personal, missing_model_help
from keyboard_app.keyboard import BACKSPACE, SEND, SHIFT, SPACE
from keyboard_app.predictor import ModelDirError, Predictor
from keyboard_app.session import KeyboardSession, cold_start


@pytest.fixture
def session(tiny_model_dir, tmp_path):
    session = KeyboardSession.open(tiny_model_dir, tmp_path / "user")
    yield session
    session.close()


def tap(session: KeyboardSession, keys: str) -> None:
    for char in keys:
        session.press(SPACE if char == " " else char)


def test_start_shows_capitalized_next_words_most_likely_in_the_middle(session):
    ranked = session.predictor.suggest("", 3)
    assert session.suggestions == (ranked[1].capitalize(), ranked[0].capitalize(),
                                   ranked[2].capitalize())


def test_strip_completes_the_word_being_typed_and_predicts_after_a_space(session):
    tap(session, "th")
    assert session.text == "Th"
    assert all(word.startswith("Th") for word in session.suggestions if word)
    assert session.strip.ranked == tuple(w.capitalize() for w in session.predictor.suggest("th", 3))
    tap(session, "e ")
    assert session.strip.ranked == tuple(session.predictor.suggest("The ", 3))
    session.press(BACKSPACE)  # back into "The": completions again
    assert session.strip.ranked == tuple(w.capitalize() for w in session.predictor.suggest("the", 3))


def test_tapping_a_suggestion_inserts_it_and_refreshes(session):
    tap(session, "it is ")
    before = session.suggestions
    middle = before[1]
    assert session.tap_suggestion(1) == middle
    assert session.text == f"It is {middle} "
    assert session.strip.ranked == tuple(session.predictor.suggest(session.text, 3))
    tap(session, "a")
    word = next(w for w in session.suggestions if w)
    session.tap_suggestion(session.suggestions.index(word))
    assert session.text == f"It is {middle} {word} "


def test_an_empty_slot_inserts_nothing(session):
    tap(session, "qqq")  # no vocabulary word starts with it
    assert session.suggestions == ("", "", "")
    assert session.tap_suggestion(0) == "" and session.text == "Qqq"


def test_send_moves_the_text_to_the_conversation_and_starts_a_new_sentence(session):
    tap(session, "hi there")
    session.press(SEND)
    tap(session, "   ")
    session.send()  # only spaces: nothing is sent
    assert session.conversation == ["Hi there"]
    assert session.text == "" and session.keyboard.shift.value == "once"
    assert session.suggestions[1] == session.predictor.suggest("", 1)[0].capitalize()


def test_the_pronoun_i_is_suggested_and_inserted_capitalized(session):
    tap(session, "so i")
    assert session.strip.ranked == tuple(session.predictor.suggest("so i", 3))
    assert "I'm" in session.suggestions  # the tiny model's best completion of "i"
    session.tap_suggestion(session.suggestions.index("I'm"))
    assert session.text == "So I'm "
    tap(session, "i ")
    assert session.text == "So I'm I "


def test_hits_count_tapped_words_and_words_offered_before_they_were_typed_in_full(session):
    stats = session.learner.stats
    session.tap_suggestion(1)  # tapped: a hit
    assert (stats.words_before, stats.hits_before) == (1, 1)
    shown = session.strip.ranked[0]  # typed by hand although the strip offered it: a hit
    tap(session, shown.lower() + " ")
    assert (stats.words_before, stats.hits_before) == (2, 2)
    tap(session, "zzz ")  # never offered: a miss
    assert (stats.words_before, stats.hits_before) == (3, 2)
    late = late_word(session.predictor, session.text)  # offered only once typed in full: a miss
    tap(session, late)
    assert late in session.strip.words
    tap(session, " ")
    assert (stats.words_before, stats.hits_before) == (4, 2)
    tap(session, "qqq")
    session.send()  # the last word counts when sent
    assert (stats.words_before, stats.hits_before) == (5, 2)
    assert stats.words_after == 0


def late_word(predictor: Predictor, text: str) -> str:
    """A vocabulary word the strip shows after `text` only once all its letters are typed."""
    for word in predictor.vocab.tokens:
        if len(word) > 3 and word.isalpha() and word in predictor.suggest(text + word, 3) and all(
                word not in predictor.suggest(text + word[:n], 3) for n in range(len(word))):
            return word
    raise AssertionError("the tiny model has no such word")


def test_shift_and_caps_lock_case_the_strip(session):
    tap(session, "ok ")
    session.press(SHIFT)
    assert all(w[:1].isupper() for w in session.suggestions if w)
    session.press(SHIFT)
    assert all(w == w.upper() for w in session.suggestions if w)


def test_a_missing_model_dir_raises_a_model_dir_error_and_help_says_what_to_run(tmp_path):
    with pytest.raises(ModelDirError, match="not found") as info:
        KeyboardSession.open(tmp_path / "nope", tmp_path / "user")
    text = missing_model_help(tmp_path / "nope", str(info.value))
    assert "fedkb demo" in text and "fedkb export" in text and "fedkb train" in text
    assert str(info.value) in text
    assert not (tmp_path / "user").exists()


def test_cold_start_returns_a_session_with_suggestions(tiny_model_dir, tmp_path):
    session, seconds = cold_start(tiny_model_dir, tmp_path / "user")
    assert seconds > 0 and all(session.suggestions)


def test_model_card_in_plain_words(tiny_model_dir):
    card = Predictor(tiny_model_dir).model_card
    text = "\n".join(describe_model(card))
    assert "Not trained federatedly" in text and "no differential privacy" in text
    assert f"{card['file']['bytes'] / 1e6:.2f} MB" in text

    federated = {**card, "training": {**card["training"], "rounds": 200, "clients_per_round": 10,
                                      "clients_seen": 3000, "secure_aggregation": True,
                                      "compression": True,
                                      "dp": {"noise_multiplier": 0.5, "epsilon": 8.4, "delta": 1e-5}},
                 "heldout_metrics": {"top1_accuracy": 0.164, "top3_accuracy": 0.27}}
    text = "\n".join(describe_model(federated))
    assert "Trained federatedly on 3,000 phones over 200 rounds (10 phones per round)" in text
    assert "\u03b5 = 8.40" in text and "\u03b4 = 1e-05" in text
    assert "secure aggregation, compressed" in text and "16.4%" in text and "27.0%" in text


def test_personal_stats_in_plain_words(session):
    learner = session.learner
    session.tap_suggestion(1)
    tap(session, "zzz ")
    lines = describe_personal(learner.stats, learning=False, personalized=False,
                              stored_messages=0, busy=False)
    text = "\n".join(lines)
    assert lines[0] == "Suggestions: the shared model."
    assert "off" in lines[1] and "not personalized yet" in text
    assert "before personalization: 50.0% of 2 words" in text
    assert "after personalization: no words yet" in text


def test_info_panel_reads_what_an_exported_card_has_in_one_number_format(tiny_model_dir):
    """The card's "training" section as `fedkb export` builds it from a real run's summary.json."""
    import re

    from fl_pipeline.export import training_card

    summary = {"rounds": 200, "clients_per_round": 10, "training_clients": 3371,
               "heldout_clients": 375, "clients_seen": 854, "examples": 120_345,
               "corpus": {"name": "fortunes", "source": "built-in", "files": ["art", "food"]},
               "dp": None, "secure_aggregation": False, "compression": False,
               "raw_text_bytes_of_training_clients": 2_345_678,
               "final_metrics": {"heldout": {"top1_accuracy": 0.164, "top3_accuracy": 0.27}}}
    training, heldout = training_card({"train": {}}, summary)
    card = {**Predictor(tiny_model_dir).model_card, "training": training, "heldout_metrics": heldout}
    card["model"] = {**card["model"], "parameters": 1_360_000}
    card["vocab"] = {**card["vocab"], "size": 10_000}
    text = "\n".join(describe_model(card))
    assert "Trained federatedly on 854 phones over 200 rounds (10 phones per round)" in text
    assert "3371" not in text and "?" not in text
    assert "Text: the fortunes corpus, 2.3 MB on the training phones." in text
    assert "10,000 words and symbols" in text and "1,360,000 parameters" in text
    assert not re.search(r"\d{4}", text), text  # every number >= 1000 has its separators
