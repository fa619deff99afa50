"""The simulated typist and the keyboard baselines (no model training, no TFF)."""

import subprocess
import sys

import numpy as np
import pytest

from datasets.vocab import BOS_ID, EOS_ID, PAD_ID, RESERVED_TOKENS, Vocabulary
from fl_pipeline.evaluation.baselines import WordPairBigram
from fl_pipeline.evaluation.keyboard_metrics import (Tally, ngram_suggester, sample_messages, summarize,
                                                     type_message, type_messages)
from models.suggest import ScoreSuggester, Suggester

VOCAB = Vocabulary.from_words(["the", "sat", "on", "mat", "cat"], size=len(RESERVED_TOKENS) + 5)


class FixedStrip:
    """Always offers the same three words, in capitals where the app would capitalize."""

    def __init__(self, words=("THE", "sat", "Mat")):
        self.words = list(words)
        self.asked: list[str] = []

    def suggest(self, text_before_cursor: str, k: int = 3) -> list[str]:
        self.asked.append(text_before_cursor)
        return self.words[:k]


def test_the_typist_on_a_hand_worked_message():
    """"The zorg sat, on mat." is typed as "the zorg sat, on mat." (21 characters); the strip
    always shows THE, sat, Mat ("zorg" is out of the vocabulary, "on" is never offered):

        the    tap THE (its space is the message's space)             1
        zorg   out of vocabulary: z, o, r, g, then the space          5
        sat,   tap sat; "," typed, the app moves it before the space  2
        on     o, n, space (never offered)                            3
        mat.   tap Mat (case-insensitive match); "." typed; the end   2
                                                                     13 keystrokes

    KSR = 1 - 13/21 = 8/21. Next word: top-1 only "the" (1/5), top-3 the, sat, mat (3/5); the
    OOV word counts as a miss. Completion after 1 letter: 5 words of 2+ letters, 3 hits; after
    2 letters: 4 words of 3+ letters (not "on"), 3 hits.
    """
    strip = FixedStrip()
    tally = type_message(strip, "The   zorg sat,\non mat.", VOCAB)
    assert tally == Tally(words=5, oov_words=1, next_top1=1, next_top3=3, complete1_words=5,
                          complete1_top3=3, complete2_words=4, complete2_top3=3,
                          characters=21, keystrokes=13)
    assert tally.rates()["ksr"] == pytest.approx(8 / 21)
    # The model only ever sees the message up to the cursor, from its start.
    assert strip.asked and all("the zorg sat, on mat.".startswith(t) for t in strip.asked)


def test_a_tapped_space_the_message_does_not_have_is_deleted():
    """"the-mat" (7 characters): tap "the" inserts "the ", backspace, "-", tap "mat" (the
    space it adds at the end costs nothing): 4 keystrokes, KSR 3/7."""
    tally = type_message(FixedStrip(), "the-mat", VOCAB)
    assert (tally.characters, tally.keystrokes) == (7, 4)


def test_without_suggestions_every_character_is_a_keystroke():
    tally = type_message(FixedStrip([]), "the cat sat.", VOCAB)
    assert tally.keystrokes == tally.characters == 12 and tally.rates()["ksr"] == 0
    assert tally.next_top3 == 0 and tally.words == 3


def test_pooled_and_user_mean_weigh_words_and_users_differently():
    """User a: "the-mat" (KSR 3/7). User b: three messages "on on" (never offered: KSR 0).
    Pooled KSR (7 + 15 characters): 3/22; mean over users: (3/7 + 0) / 2."""
    messages = {"a": ["the-mat"], "b": ["on on"] * 3}
    report = summarize({user: type_messages(FixedStrip(), texts, VOCAB)
                        for user, texts in messages.items()})
    assert report["pooled"]["ksr"] == pytest.approx(3 / 22)
    assert report["user_mean"]["ksr"] == pytest.approx((3 / 7) / 2)
    assert report["pooled"]["next_top3"] == pytest.approx(2 / 8)  # the, mat of 8 words
    assert report["user_mean"]["next_top3"] == pytest.approx((2 / 2 + 0) / 2)
    assert report["counts"]["users"] == 2 and report["counts"]["characters"] == 22


def test_messages_are_capped_per_user_and_users_sampled_by_seed():
    future = {f"u{i}": [f"m{j}" for j in range(i + 1)] for i in range(10)}
    future["empty"] = []
    capped = sample_messages(future, max_users=None, max_messages_per_user=3)
    assert "empty" not in capped and len(capped) == 10
    assert capped["u9"] == ["m0", "m1", "m2"] and capped["u0"] == ["m0"]
    sampled = sample_messages(future, max_users=4, seed=1)
    assert len(sampled) == 4 and sampled == sample_messages(future, max_users=4, seed=1)


def window(*words):
    ids = [BOS_ID, *VOCAB.encode(words), EOS_ID]
    return np.array([PAD_ID] * (10 - len(ids)) + ids)


def test_the_bigram_suggests_the_most_frequent_followers():
    """After "the": cat twice, mat once. With no follower seen, by word frequency."""
    bigram = WordPairBigram(len(VOCAB)).fit([window("the", "cat", "sat"), window("the", "cat"),
                                             window("the", "mat", "on", "the", "cat")])
    p = bigram.distribution(PAD_ID, VOCAB.id("the"))
    assert p.sum() == pytest.approx(1.0)
    suggester = ngram_suggester(bigram, VOCAB, context_len=8)
    assert isinstance(suggester, Suggester)
    assert suggester.suggest("The ", 2) == ["cat", "mat"]
    assert suggester.suggest("the m") == ["mat"]  # completions keep the same order
    assert suggester.suggest("cat ")[0] == "sat"
    # the first word of a message follows <bos>: "the" started every sentence
    assert suggester.suggest("")[0] == "the"
    # never punctuation or special tokens, even though <eos> follows "cat" most often
    assert all(VOCAB.is_word(VOCAB.id(w)) for w in suggester.suggest("the cat ", 5))


def test_score_suggester_gives_the_scorer_the_left_padded_context():
    seen = []

    def scores(context):
        seen.append(context)
        return np.arange(len(VOCAB), dtype=float)  # the last word id scores best

    suggester = ScoreSuggester(VOCAB, scores, context_len=4)
    assert suggester.suggest("the cat sat on ") == ["cat", "mat", "on"]
    assert seen[-1] == VOCAB.encode(["the", "cat", "sat", "on"])  # the last 4 of <bos> the cat sat on
    assert suggester.suggest("") and seen[-1] == [PAD_ID] * 3 + [BOS_ID]


def test_the_evaluation_imports_no_keyboard_app_code():
    """The server side judges models through `models.suggest`; only the CLI wires in the app."""
    code = ("import sys, fl_pipeline.evaluation.compare, fl_pipeline.evaluation.keyboard_metrics; "
            "print(sorted(m for m in sys.modules if m.startswith('keyboard_app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "[]"


def test_personalization_gains_are_pooled_paired_and_count_the_users_made_worse():
    from fl_pipeline.evaluation.keyboard_metrics import personalization_gains

    def tally(hits: int) -> Tally:
        return Tally(words=100, next_top3=hits, characters=400, keystrokes=400 - 2 * hits)

    # Ten users helped (20 -> 30 hits), one made worse (20 -> 10), one unchanged.
    before = {f"u{i}": tally(20) for i in range(12)}
    after = {**{f"u{i}": tally(30) for i in range(10)}, "u10": tally(10), "u11": tally(20)}
    past = {**{f"u{i}": 25 for i in range(6)}, **{f"u{i}": 300 for i in range(6, 12)}}
    gains = personalization_gains(before, after, past, seed=0)
    top3 = gains["figures"]["next_top3"]
    assert top3["before"] == 0.2 and top3["gain"] == pytest.approx(330 / 240 - 1)
    low, high = top3["interval_95"]
    assert 0 < low < top3["gain"] < high  # most users gained: the interval stays above zero
    assert top3["share_worse"] == pytest.approx(1 / 12) and top3["per_user"]["u10"] == -0.5
    assert [(b["past_messages"], b["users"]) for b in gains["by_past_messages"]] == [
        ("20-49", 6), ("50-99", 0), ("100-199", 0), ("200+", 6)]
    assert gains["by_past_messages"][1]["next_top3"] is None  # no user, no gain
    assert personalization_gains(before, after, past, seed=0) == gains  # seeded
