import json

import pytest

from datasets.vocab import (BOS_ID, EOS_ID, OOV_ID, PAD_ID, RESERVED_TOKENS, Vocabulary,
                            VocabularyError)


def test_wordfreq_vocabulary_has_the_layout_and_size():
    vocab = Vocabulary.from_wordfreq(500)
    assert len(vocab) == 500
    assert vocab.decode([PAD_ID, OOV_ID, BOS_ID, EOS_ID]) == ["<pad>", "<oov>", "<bos>", "<eos>"]
    assert vocab.id("the") >= len(RESERVED_TOKENS) and vocab.is_word(vocab.id("the"))
    assert vocab.id("zzyzzx-never") == OOV_ID


def test_from_counts_ranks_by_frequency_then_alphabet():
    vocab = Vocabulary.from_counts({"b": 2, "a": 2, "c": 5, "d": 1}, size=len(RESERVED_TOKENS) + 3)
    assert vocab.tokens[len(RESERVED_TOKENS):] == ("c", "a", "b")


def test_save_load_round_trip_and_tamper_detection(tmp_path):
    vocab = Vocabulary.from_words(["hello", "world"], size=50)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    data = json.loads(path.read_text())
    data["tokens"][-1] = "planet"
    path.write_text(json.dumps(data))
    with pytest.raises(VocabularyError, match="sha256"):
        Vocabulary.load(path)


@pytest.mark.parametrize("content", ["", "{not json", '{"tokens": [1, 2]}', '{"tokens": ["a"]}'])
def test_malformed_vocab_files_raise_vocabulary_error_naming_the_file(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(VocabularyError, match="vocab.json"):
        Vocabulary.load(path)
