"""Client splits, past/future texts and the fixed-length training windows."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datasets.examples import encode_text, windows
from datasets.splits import past_count, select_clients, split_clients, split_past_future
from datasets.vocab import BOS_ID, EOS_ID, PAD_ID, Vocabulary

CLIENTS = [f"user{i}" for i in range(2000)]


def test_split_is_fixed_by_the_seed_and_near_the_fraction():
    first = split_clients(CLIENTS, 0.1, seed=3)
    assert first == split_clients(list(reversed(CLIENTS)), 0.1, seed=3)
    assert 150 < len(first.heldout) < 250
    assert sorted(first.train + first.heldout) == sorted(CLIENTS)
    assert not set(first.train) & set(first.heldout)
    assert split_clients(CLIENTS, 0.1, seed=4).heldout != first.heldout


def test_adding_clients_never_moves_existing_ones():
    small, large = split_clients(CLIENTS[:500], 0.1, 0), split_clients(CLIENTS, 0.1, 0)
    assert set(small.heldout) == set(large.heldout) & set(CLIENTS[:500])


def test_tiny_corpora_get_one_client_on_each_side():
    assert split_clients(["a", "b"], 0.1, 0).heldout != []
    assert split_clients(["a", "b"], 0.99, 0).train != []


@pytest.mark.parametrize("n,past", [(1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (10, 8), (12, 10)])
def test_past_is_80_percent_rounded_with_one_text_on_each_side(n, past):
    assert past_count(n, 0.8) == past
    texts = [f"t{i}" for i in range(n)]
    before, after = split_past_future(texts, 0.8)
    assert before + after == texts and len(before) == past


def test_select_clients_is_seeded_and_nested():
    assert select_clients(CLIENTS, 10, 0) == select_clients(reversed(CLIENTS), 10, 0)
    assert set(select_clients(CLIENTS, 10, 0)) <= set(select_clients(CLIENTS, 50, 0))
    assert select_clients(CLIENTS, 10, 0) != select_clients(CLIENTS, 10, 1)
    assert select_clients(["b", "a"], 10, 0) == ["a", "b"]


def test_short_text_is_one_left_padded_window():
    vocab = Vocabulary.from_words(["hello", "world"], size=40)
    ids = encode_text("Hello world!", vocab)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert windows(ids, 20) == [[PAD_ID] * (21 - len(ids)) + ids]


def test_long_text_windows_overlap_by_one_and_the_rest_is_left_padded():
    ids = list(range(10, 55))  # 45 ids, T = 20: targets 1..44 in windows of 21
    result = windows(ids, 20)
    assert result[0] == ids[0:21] and result[1] == ids[20:41]
    assert result[2] == [PAD_ID] * 16 + ids[40:45]


@given(st.lists(st.integers(4, 99), max_size=200), st.integers(1, 30))
def test_every_target_is_predicted_exactly_once(ids, seq_len):
    result = windows(ids, seq_len)
    assert all(len(w) == seq_len + 1 for w in result)
    # (input, target) pairs at non-padding inputs: each id after the first is a target once.
    pairs = [(w[i], w[i + 1]) for w in result for i in range(seq_len) if w[i] != PAD_ID]
    assert [target for _, target in pairs] == ids[1:]
