import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from datasets import tokenizer
from datasets.tokenizer import BOS, EOS
from datasets.vocab import Vocabulary


def test_words_keep_inner_apostrophes_numbers_and_punctuation():
    assert tokenizer.words("Don’t PANIC, it's 42!") == ["don't", "panic", ",", "it's", "42", "!"]


def test_nfkc_folds_compatibility_characters():
    assert tokenizer.words("ﬁne…") == ["fine", ".", ".", "."]


def test_sentences_are_wrapped_and_runs_of_enders_end_once():
    assert tokenizer.tokenize("Really?! Yes. no") == [
        BOS, "really", "?", "!", EOS, BOS, "yes", ".", EOS, BOS, "no", EOS,
    ]


def test_split_context_inside_a_word_and_after_a_sentence():
    assert tokenizer.split_context("Hello wor") == ([BOS, "hello"], "wor")
    assert tokenizer.split_context("Hi. ") == ([BOS, "hi", ".", EOS, BOS], "")
    assert tokenizer.split_context("") == ([BOS], "")
    assert tokenizer.split_context("I don'") == ([BOS, "i"], "don'")
    assert tokenizer.split_context("I am\n") == ([BOS, "i", "am"], "")  # not inside a word


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_tokenizer_on_any_unicode_is_total_deterministic_and_in_range(text):
    vocab = Vocabulary.from_words(["the", "a"], size=30)
    first = tokenizer.tokenize(text)
    assert first == tokenizer.tokenize(text)
    assert all(0 <= i < len(vocab) for i in vocab.encode(first))
    context, partial = tokenizer.split_context(text)
    assert context[0] == BOS and EOS != context[-1]
    assert partial == "" or tokenizer.normalize(text).endswith(partial)


def test_importing_the_tokenizer_and_vocab_leaves_tensorflow_out():
    code = "import sys, datasets.tokenizer, datasets.vocab; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
