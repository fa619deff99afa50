"""Keyboard metrics: what a typist feels, for any model behind `suggest(text_before_cursor, k)`.

Token-level top-k (`fl_pipeline.baselines`) scores token ids; these figures
score the suggestion strip. Every model is asked through the same
`models.suggest.Suggester` contract as the app's predictor, and the same
simulated typist types every held-out user's future messages.

The typist's rules and its `Tally` live in `models/typist.py` (one place
for them: the app's never-worse check types the user's messages with the
same code, on the device); this module re-exports them and adds what only
the server needs.

Each figure is reported pooled (every word, or for KSR every character,
counts once) and as the mean over users (each user's own rate, every user
counts once), over at most `max_messages_per_user` future messages of each
user, so no one prolific user decides the result.

Pure Python on top of the contract: the neural models reach it as exported
TFLite files run by LiteRT. The server side never imports `keyboard_app`;
`fl_pipeline.evaluate.compare` takes a factory `model_dir -> Suggester` and
the `fedkb eval` command passes the app's own `Predictor` (see there).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields

import numpy as np

from datasets.vocab import PAD_ID, Vocabulary
from models.suggest import ScoreSuggester
from models.typist import (ATTACHING, FIGURES, STRIP, Tally, type_message,  # noqa: F401
                           type_messages, typed_form)

MAX_MESSAGES_PER_USER = 200


def summarize(tallies: Mapping[str, Tally]) -> dict:
    """{"pooled": figures, "user_mean": figures, "counts": totals} over users' tallies."""
    total = Tally()
    for tally in tallies.values():
        total += tally
    per_user = [tally.rates() for tally in tallies.values()]
    user_mean = {}
    for name in FIGURES:
        values = [rates[name] for rates in per_user if rates[name] is not None]
        user_mean[name] = float(np.mean(values)) if values else None
    return {"pooled": total.rates(), "user_mean": user_mean,
            "counts": {"users": len(tallies),
                       **{f.name: getattr(total, f.name) for f in fields(total)}}}


def sample_messages(future: Mapping[str, Sequence[str]], *, max_users: int | None,
                    max_messages_per_user: int = MAX_MESSAGES_PER_USER, seed: int = 0
                    ) -> dict[str, list[str]]:
    """Users with future messages (a seeded sample of `max_users` if given), each capped to
    their first `max_messages_per_user` messages, in their order."""
    users = sorted(u for u, texts in future.items() if texts)
    if max_users is not None and len(users) > max_users:
        users = sorted(random.Random(seed).sample(users, max_users))
    return {u: list(future[u][:max_messages_per_user]) for u in users}


# -- models that are not the app's predictor, as Suggesters --------------------------------

def keras_suggester(predict: Callable, vocab: Vocabulary, context_len: int) -> ScoreSuggester:
    """A Keras next-word model (`predict(x int32 [1, T]) -> logits [1, T, V]`) as a Suggester.

    The last position's logits after the left-padded context: what the
    exported model's `suggest` signature computes, without quantization.
    """
    def scores(context: list[int]) -> np.ndarray:
        return np.asarray(predict(np.array([context], dtype=np.int32)))[0, -1]
    return ScoreSuggester(vocab, scores, context_len)


def ngram_suggester(model, vocab: Vocabulary, context_len: int) -> ScoreSuggester:
    """A model with `distribution(u, v) -> P(w | u, v)` (the trigram, the bigram) as a Suggester."""
    def scores(context: list[int]) -> np.ndarray:
        u = context[-2] if len(context) >= 2 else PAD_ID
        return model.distribution(u, context[-1])
    return ScoreSuggester(vocab, scores, context_len)
