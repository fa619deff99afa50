"""The n-gram baseline and the privacy/communication arithmetic (no TFF run needed)."""

import numpy as np
import pytest

from datasets.vocab import BOS_ID, EOS_ID, OOV_ID, PAD_ID
from fl_pipeline.evaluation.baselines import KneserNeyTrigram
from fl_pipeline.training.privacy import dp_epsilon

V = 12
A, B, C, D = 8, 9, 10, 11  # word ids


def window(*ids):
    return np.array([PAD_ID] * (8 - len(ids)) + [BOS_ID, *ids])


def test_kneser_ney_distribution_is_a_distribution_that_follows_the_text():
    model = KneserNeyTrigram(V).fit([window(A, B, C, EOS_ID)] * 5 + [window(A, B, D, EOS_ID)])
    p = model.distribution(A, B)
    assert p.sum() == pytest.approx(1.0)
    assert np.argmax(p) == C and p[C] > p[D] > p[A]
    unseen = model.distribution(D, D)  # backs off to the unigram continuation
    assert unseen.sum() == pytest.approx(1.0) and unseen.min() > 0


def test_kneser_ney_score_counts_oov_as_wrong_and_skips_padding():
    model = KneserNeyTrigram(V).fit([window(A, OOV_ID, EOS_ID)] * 4)
    score = model.score([window(A, OOV_ID, EOS_ID)], show_progress=False)
    # targets: A, <oov>, <eos> (pads and <bos> skipped); <oov> is predicted but never right
    assert score.tokens == 3
    assert score.top1_accuracy == pytest.approx(2 / 3)


def test_more_noise_or_fewer_rounds_means_smaller_epsilon():
    low_noise, delta = dp_epsilon(0.5, 10, 1000, 50)
    high_noise, _ = dp_epsilon(2.0, 10, 1000, 50)
    fewer_rounds, _ = dp_epsilon(0.5, 10, 1000, 5)
    assert high_noise < low_noise and fewer_rounds < low_noise
    assert 0 < delta < 1 / 1000


def test_the_rows_of_a_round_keep_the_frequent_words_and_rotate_through_the_others():
    from fl_pipeline.training.compression import embedding_rows

    vocab, rows = 100, 20
    seen = set()
    for round_num in range(9):
        selected = embedding_rows(round_num, vocab, rows).numpy().tolist()
        assert len(selected) == len(set(selected)) == rows  # no row twice: scatter_nd sums duplicates
        assert set(range(10)) <= set(selected) and max(selected) < vocab
        seen.update(selected)
    assert seen == set(range(vocab))  # every row is sent within ceil(90 / 10) rounds
    assert sorted(embedding_rows(3, vocab, vocab).numpy().tolist()) == list(range(vocab))

