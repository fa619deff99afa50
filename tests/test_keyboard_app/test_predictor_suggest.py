"""`Predictor.suggest` and `Predictor.logprobs`: what the suggestion bar shows."""

import os
import subprocess
import sys

import numpy as np
import pytest

from datasets.tokenizer import split_context
from datasets.vocab import BOS_ID, PAD_ID, RESERVED_TOKENS
from factories import synthetic_texts, tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.predictor import Predictor
from models.suggest import display_form


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> Predictor:
    return Predictor(tiny_model_dir)


def ranked_words(predictor: Predictor, text: str, prefix: str = "") -> list[str]:
    """All vocabulary words starting with `prefix`, by the model's log-prob after `text`."""
    tokens, _ = split_context(text)
    logprobs = predictor.logprobs(predictor.vocab.encode(tokens))
    ids = [i for i, token in enumerate(predictor.vocab.tokens)
           if predictor.vocab.is_word(i) and token.startswith(prefix)]
    return [display_form(predictor.vocab.tokens[i]) for i in sorted(ids, key=lambda i: -logprobs[i])]


def some_texts(predictor: Predictor, n: int = 40) -> list[str]:
    words = predictor.vocab.tokens[len(RESERVED_TOKENS):]
    return synthetic_texts(words, n, seed=99)


def test_next_word_is_the_most_likely_words_most_likely_first(predictor):
    for text in ["", "Hello. ", "the ", "you have ", *[t[: len(t) // 2].rsplit(" ", 1)[0] + " "
                                                      for t in some_texts(predictor)]]:
        assert predictor.suggest(text) == ranked_words(predictor, text)[:3], text
        assert predictor.suggest(text, k=5) == ranked_words(predictor, text)[:5], text


def test_partial_word_is_completed_with_the_likeliest_matching_words(predictor):
    for before in ["", "you have ", "it is not "]:
        suggestions = predictor.suggest(before + "th")
        assert len(suggestions) == 3 and all(w.startswith("th") for w in suggestions)
        assert suggestions == ranked_words(predictor, before, prefix="th")[:3]


def test_completion_is_case_insensitive_and_keeps_a_complete_word(predictor):
    assert predictor.suggest("you have TH") == predictor.suggest("you have th")
    assert predictor.suggest("The") == predictor.suggest("the")
    assert "the" in predictor.suggest("the", k=10)  # a complete word is still offered
    assert predictor.suggest("the", k=10) != predictor.suggest("the ", k=10)


def test_unknown_prefix_gives_no_suggestion_and_few_matches_give_fewer(predictor):
    assert predictor.suggest("you have xqzj") == []
    matches = ranked_words(predictor, "", prefix="abo")
    assert 0 < len(matches) < 10
    assert predictor.suggest("abo", k=10) == matches


def test_never_suggests_special_tokens_or_punctuation(predictor):
    reserved = set(RESERVED_TOKENS)
    texts = ["", ". ", "!", "'", "<", "<bo", "hello,", "hello, ", "1", *some_texts(predictor)]
    for text in texts:
        for k in (3, 50):
            for word in predictor.suggest(text, k=k):
                assert word.lower() not in reserved and word.lower() in predictor.vocab.tokens
                assert word.lower() == word or word.startswith("I")


def test_pronoun_i_is_suggested_capitalized(predictor):
    assert display_form("i") == "I" and display_form("i'm") == "I'm" and display_form("it") == "it"
    assert display_form("in") == "in" and display_form("i've") == "I've"
    completions = predictor.suggest("so i", k=50)
    assert "I" in completions and "i" not in completions and "it" in completions
    contractions = predictor.suggest("so i'", k=5)
    assert contractions and all(w.startswith("I'") for w in contractions)


def test_context_is_the_last_T_tokens_left_padded(predictor):
    T = predictor.context_len
    assert np.array_equal(predictor.logprobs([BOS_ID]), predictor.logprobs([PAD_ID] * (T - 1) + [BOS_ID]))
    ids = predictor.vocab.encode(["the", "to", "and"] * T)
    assert np.array_equal(predictor.logprobs(ids), predictor.logprobs(ids[-T:]))
    assert not np.array_equal(predictor.logprobs(ids[-T:]), predictor.logprobs(ids[-T + 1:]))
    logprobs = predictor.logprobs(ids)
    assert logprobs.shape == (len(predictor.vocab),) and logprobs.dtype == np.float32
    assert np.exp(logprobs).sum() == pytest.approx(1.0, abs=1e-4)


def test_a_long_text_gives_what_its_full_tokenization_gives(predictor):
    """Only the end of a long text is tokenized (speed); the suggestions must not change."""
    long_text = ("we have more of the same. " * 500) + "it is not the way you have the"
    assert len(long_text) > 100 * predictor.context_len
    for text in (long_text + " ", long_text + " th", "x" * 5000 + " the "):
        assert predictor.suggest(text, k=5) == ranked_words(predictor, text, split_context(text)[1])[:5]


def test_bad_arguments_raise_value_error(predictor):
    with pytest.raises(ValueError, match="k must be"):
        predictor.suggest("the", k=0)
    with pytest.raises(ValueError, match="context ids"):
        predictor.logprobs([len(predictor.vocab)])
    with pytest.raises(ValueError, match="context ids"):
        predictor.logprobs([-1])


def test_predictor_and_fedkb_predict_never_import_tensorflow(tiny_model_dir):
    code = f"""
import sys
import numpy as np
from keyboard_app.model_dir import read_model_dir
from keyboard_app.predictor import Predictor
read_model_dir({str(tiny_model_dir)!r})
p = Predictor({str(tiny_model_dir)!r})
assert p.suggest("you have th")
c, t = p.training_examples("it is not the way.")
p.train_step(np.resize(c, (p.train_batch_size, p.context_len)), np.resize(t, p.train_batch_size))
p.set_personal(p.get_personal())
p.fine_tune(["we have more of the same."])
from fl_pipeline.cli import main
assert main(["predict", "--model", {str(tiny_model_dir)!r}, "the"]) == 0
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "False"]


def test_fedkb_predict_prints_one_suggestion_per_line(tiny_model_dir, predictor):
    out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "predict", "--model",
                          str(tiny_model_dir), "-k", "4", "So th"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:-1] == predictor.suggest("So th", k=4)
    assert out.stderr == ""  # not LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"


def test_only_litert_info_is_dropped_from_stderr(capfd):
    from keyboard_app.predictor import _without_litert_info

    with _without_litert_info():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"
