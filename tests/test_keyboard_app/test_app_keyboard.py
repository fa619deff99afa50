"""The text field state machine and the strip order: typing as a phone user expects, no model needed."""

import pytest

from keyboard_app.keyboard import (BACKSPACE, LAYER, LETTER_ROWS, SEND, SHIFT, SPACE, SYMBOL_ROWS,
                                   Keyboard, Layer, Shift, at_sentence_start, partial_word)
from keyboard_app.suggestions import strip_order


def tap(keyboard: Keyboard, keys: str) -> list:
    """Taps on-screen keys: letters as given ('A' is tapped as 'a'), ' ' is space."""
    edits = []
    for char in keys:
        edits.append(keyboard.press(SPACE if char == " " else char.lower()))
    return [e.completed_word for e in edits if e.completed_word]


def test_first_letter_of_each_sentence_is_capitalized_automatically():
    keyboard = Keyboard()
    assert keyboard.shift is Shift.ONCE
    tap(keyboard, "hello there. how are you? fine! ok")
    assert keyboard.text == "Hello there. How are you? Fine! Ok"
    assert keyboard.shift is Shift.OFF


def test_no_capital_after_a_dot_without_space_or_inside_a_sentence():
    keyboard = Keyboard()
    tap(keyboard, "see e.g")
    assert keyboard.text == "See e.g"


def test_the_pronoun_i_is_capitalized_when_the_word_ends():
    keyboard = Keyboard()
    tap(keyboard, "so i think i'm right, i'll see if it is in")
    assert keyboard.text == "So I think I'm right, I'll see if it is in"
    keyboard = Keyboard()
    keyboard.type_text("hi i")
    assert keyboard.text == "Hi i"  # still being typed: "i" may become "if"
    keyboard.type_text("?")
    assert keyboard.text == "Hi I?"


def test_shift_cycles_once_locked_off_and_once_applies_to_one_letter():
    keyboard = Keyboard("ok ")
    assert keyboard.shift is Shift.OFF
    keyboard.press(SHIFT)
    assert keyboard.shift is Shift.ONCE and keyboard.label("q") == "Q"
    tap(keyboard, "ab")
    assert keyboard.text == "ok Ab"
    keyboard.press(SHIFT)
    keyboard.press(SHIFT)
    assert keyboard.shift is Shift.LOCKED
    tap(keyboard, "cd. e")
    assert keyboard.text == "ok AbCD. E" and keyboard.shift is Shift.LOCKED
    keyboard.press(SHIFT)
    tap(keyboard, "f")
    assert keyboard.text.endswith("Ef") and keyboard.label("q") == "q"


def test_switching_the_sentence_start_shift_off_types_lowercase():
    keyboard = Keyboard()
    keyboard.press(SHIFT)  # once -> locked
    keyboard.press(SHIFT)  # locked -> off
    tap(keyboard, "ok")
    assert keyboard.text == "ok"


def test_backspace_crosses_a_word_boundary_back_into_the_word():
    keyboard = Keyboard()
    tap(keyboard, "good day ")
    assert keyboard.partial_word == ""
    keyboard.press(BACKSPACE)
    assert keyboard.text == "Good day" and keyboard.partial_word == "day"
    for _ in range(4):
        keyboard.press(BACKSPACE)
    assert keyboard.text == "Good" and keyboard.partial_word == "Good"
    for _ in range(10):
        keyboard.press(BACKSPACE)  # more than there is: stops at empty
    assert keyboard.text == "" and keyboard.shift is Shift.ONCE  # a new sentence again


def test_backspace_after_a_sentence_end_restores_the_sentence_start_shift():
    keyboard = Keyboard()
    tap(keyboard, "done. n")
    assert keyboard.text == "Done. N"
    keyboard.press(BACKSPACE)
    assert keyboard.text == "Done. " and keyboard.shift is Shift.ONCE


def test_delete_word_removes_the_previous_word_and_its_space():
    keyboard = Keyboard("I like green tea  ")
    keyboard.delete_word()
    assert keyboard.text == "I like green "
    keyboard.delete_word()
    assert keyboard.text == "I like "
    keyboard = Keyboard("Really?!")
    keyboard.delete_word()
    assert keyboard.text == "Really?"


def test_a_suggestion_replaces_the_partial_word_and_adds_a_space():
    keyboard = Keyboard()
    tap(keyboard, "see you tomo")
    edit = keyboard.apply_suggestion("tomorrow")
    assert keyboard.text == "See you tomorrow " and keyboard.partial_word == ""
    assert edit.completed_word == "tomorrow" and edit.from_suggestion
    keyboard.apply_suggestion("then")  # after a space: the next word
    assert keyboard.text == "See you tomorrow then "


def test_suggestions_are_cased_for_where_they_go():
    keyboard = Keyboard()
    assert keyboard.cased("the") == "The"  # sentence start
    keyboard.apply_suggestion("the")
    assert keyboard.text == "The " and keyboard.cased("cat") == "cat"
    tap(keyboard, "big. Th")
    assert keyboard.cased("then") == "Then"  # partial typed with a capital
    keyboard.press(BACKSPACE)
    keyboard.press(BACKSPACE)
    keyboard.press(SHIFT)  # once -> locked
    tap(keyboard, "th")
    assert keyboard.text == "The big. TH" and keyboard.cased("then") == "THEN"
    keyboard.apply_suggestion("then")
    assert keyboard.text == "The big. THEN "
    assert keyboard.cased("I'm") == "I'M"
    keyboard.press(SHIFT)  # locked -> off
    assert keyboard.cased("I'm") == "I'm" and keyboard.cased("now") == "now"


def test_a_lowercase_partial_at_sentence_start_stays_lowercase():
    keyboard = Keyboard()
    keyboard.press(SHIFT)  # the sentence-start shift: once -> locked -> off
    keyboard.press(SHIFT)
    keyboard.type_text("th")
    assert keyboard.cased("the") == "the"
    keyboard.apply_suggestion("the")
    assert keyboard.text == "the "


def test_punctuation_after_a_suggestion_moves_before_its_space():
    keyboard = Keyboard()
    tap(keyboard, "thanks a l")
    keyboard.apply_suggestion("lot")
    keyboard.press(".")
    assert keyboard.text == "Thanks a lot. " and keyboard.shift is Shift.ONCE
    keyboard = Keyboard("Wait ")  # a space the user typed stays where it is
    keyboard.press(",")
    assert keyboard.text == "Wait ,"


def test_edits_report_the_word_they_complete():
    keyboard = Keyboard()
    assert tap(keyboard, "don't stop, it's fine") == ["Don't", "stop", "it's"]
    assert keyboard.type_text(".")[0].completed_word == "fine"
    assert keyboard.press(BACKSPACE).completed_word == ""


def test_symbol_layer_types_digits_and_symbols_and_switches_back():
    keyboard = Keyboard("at ")
    assert keyboard.rows == LETTER_ROWS and keyboard.label(LAYER) == "?123"
    keyboard.press(LAYER)
    assert keyboard.layer is Layer.SYMBOLS and keyboard.rows == SYMBOL_ROWS
    assert keyboard.label(LAYER) == "ABC"
    for key in "10:30!":
        keyboard.press(key)
    keyboard.press(LAYER)
    assert keyboard.text == "at 10:30!" and keyboard.layer is Layer.LETTERS


def test_every_key_on_both_layers_can_be_pressed():
    keyboard = Keyboard()
    for rows in (LETTER_ROWS, SYMBOL_ROWS):
        for row in rows:
            for key in row:
                if key not in (SEND, LAYER):
                    keyboard.press(key)
                assert keyboard.label(key)
    with pytest.raises(ValueError, match="send"):
        keyboard.press(SEND)


def test_physical_keyboard_capitalizes_like_the_on_screen_keys():
    typed, tapped = Keyboard(), Keyboard()
    typed.type_text("hello there. how are you? i'm fine")
    tap(tapped, "hello there. how are you? i'm fine")
    assert typed.text == tapped.text == "Hello there. How are you? I'm fine"
    keyboard = Keyboard()
    keyboard.type_text("hELLO World")  # what the physical Shift typed stays as typed
    assert keyboard.text == "HELLO World"


def test_partial_word_and_sentence_start_helpers():
    assert partial_word("it's don'") == "don'"
    assert partial_word("hello ") == "" and partial_word("a,") == "" and partial_word("x2") == "x2"
    assert at_sentence_start("") and at_sentence_start("  ") and at_sentence_start("Hi! ")
    assert not at_sentence_start("Hi!") and not at_sentence_start("Hi ")


def test_strip_puts_the_most_likely_word_in_the_middle():
    assert strip_order(["best", "second", "third"]) == ("second", "best", "third")
    assert strip_order(["best", "second"]) == ("second", "best", "")
    assert strip_order(["best"]) == ("", "best", "")
    assert strip_order([]) == ("", "", "")
