"""Keyboard metrics: what a typist feels, for any model behind `suggest(text_before_cursor, k)`.

Token-level top-k (`fl_pipeline.evaluation.baselines`) scores token ids; these figures
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
`fl_pipeline.evaluation.compare.compare` takes a factory `model_dir -> Suggester` and
the `fedkb eval` command passes the app's own `Predictor` (see there).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields

import numpy as np

from datasets.vocab import PAD_ID, Vocabulary
from models.suggest import ScoreSuggester, Suggester
from models.typist import (ATTACHING, FIGURES, STRIP, Tally, type_message,  # noqa: F401
                           type_messages, typed_form)

MAX_MESSAGES_PER_USER = 200


def total_of(tallies: Sequence[Tally]) -> Tally:
    """The tallies added up."""
    total = Tally()
    for tally in tallies:
        total += tally
    return total


def summarize(tallies: Mapping[str, Tally]) -> dict:
    """{"pooled": figures, "user_mean": figures, "counts": totals} over users' tallies."""
    total = total_of(list(tallies.values()))
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


# -- on-device personalization, judged by the same typist ----------------------------------

PERSONAL_FIGURES = ("next_top3", "ksr")  # the two goals: strip top-3 and KSR
PAST_BUCKETS = (20, 50, 100, 200)  # past messages: up to 49 (from 20 by default), 50-99, 100-199, 200+
WORSE = 0.01  # a user is "worse" when a figure drops by more than 1% relative
BOOTSTRAP_RESAMPLES = 1000


def _hits(tally: Tally, figure: str) -> tuple[int, int]:
    """(hits, out of) behind one figure: words for top-3, characters saved for KSR."""
    if figure == "ksr":
        return tally.characters - tally.keystrokes, tally.characters
    return getattr(tally, figure), tally.words


def _relative_gain(before: Sequence[Tally], after: Sequence[Tally], figure: str) -> float | None:
    """Pooled after / before - 1 over these users (every word or character counts once)."""
    hits_before = sum(_hits(t, figure)[0] for t in before)
    hits_after = sum(_hits(t, figure)[0] for t in after)
    return hits_after / hits_before - 1 if hits_before > 0 else None


def type_personalized(personalize: Callable[[list[str]], Suggester],
                      past: Mapping[str, Sequence[str]], future: Mapping[str, Sequence[str]],
                      vocab: Vocabulary, show_progress: bool = False) -> dict[str, Tally]:
    """Each user's future messages typed after `personalize(their past)` (one user at a time)."""
    from tqdm.auto import tqdm

    return {user: type_messages(personalize(list(past[user])), future[user], vocab)
            for user in tqdm(list(future), desc="personalized users", unit="user",
                             disable=not show_progress)}


def personalization_gains(before: Mapping[str, Tally], after: Mapping[str, Tally],
                          past_messages: Mapping[str, int], *, seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """What personalizing did to these users, figure by figure.

    Per figure: the pooled rates before and after, the pooled relative gain
    with a paired bootstrap 95% interval (users resampled with replacement,
    before and after together), the share of users worse by more than 1%
    relative, and each user's own gain (None without a hit before). And the
    pooled gains by amount of past text (`PAST_BUCKETS`), with their user counts.
    """
    users = sorted(after)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(users), size=(resamples, len(users))) if users else []
    figures = {}
    for figure in PERSONAL_FIGURES:
        b = [before[u] for u in users]
        a = [after[u] for u in users]
        per_user = {u: _relative_gain([before[u]], [after[u]], figure) for u in users}
        boot = [g for g in (_relative_gain([b[i] for i in draw], [a[i] for i in draw], figure)
                            for draw in draws) if g is not None]
        # The same messages before and after: a user's gain compares their hits.
        worse = [u for u, gain in per_user.items() if gain is not None and gain < -WORSE]
        figures[figure] = {
            "before": total_of(b).rates()[figure], "after": total_of(a).rates()[figure],
            "gain": _relative_gain(b, a, figure),
            "interval_95": ([float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
                            if boot else None),
            "share_worse": len(worse) / len(users) if users else None,
            "per_user": per_user}
    edges = [0, *PAST_BUCKETS[1:], None]  # the first bucket: whatever the users have below 50
    by_past = []
    for bucket, low, high in zip(PAST_BUCKETS, edges, edges[1:]):
        group = [u for u in users if past_messages[u] >= low and (high is None or past_messages[u] < high)]
        low = min([bucket] + [past_messages[u] for u in group])
        by_past.append({"past_messages": f"{low}+" if high is None else f"{low}-{high - 1}",
                        "users": len(group),
                        **{figure: _relative_gain([before[u] for u in group],
                                                  [after[u] for u in group], figure)
                           for figure in PERSONAL_FIGURES}})
    return {"users": len(users), "bootstrap_resamples": resamples, "seed": seed,
            "figures": figures, "by_past_messages": by_past}


def measure_personalization(personalize: Callable[[list[str]], Suggester], shared: Suggester,
                            heldout: Mapping[str, tuple[Sequence[str], Sequence[str]]],
                            vocab: Vocabulary, *, min_past_messages: int, max_users: int | None,
                            max_messages_per_user: int, seed: int = 0,
                            show_progress: bool = False) -> dict:
    """`personalization_gains` for the held-out users (`heldout`: user -> (past, future)) with
    at least `min_past_messages` past messages, a seeded sample of `max_users` of them: their
    future messages typed with `shared`, and again after `personalize(their past)`."""
    future = sample_messages({u: f for u, (p, f) in heldout.items() if len(p) >= min_past_messages},
                             max_users=max_users, max_messages_per_user=max_messages_per_user,
                             seed=seed)
    past = {u: list(heldout[u][0]) for u in future}
    before = {u: type_messages(shared, texts, vocab) for u, texts in future.items()}
    after = type_personalized(personalize, past, future, vocab, show_progress)
    return {"min_past_messages": min_past_messages,
            "how": "the exported federated model on LiteRT, before and after the app's "
                   "PersonalLearner learned one pass on each user's past messages (never-worse "
                   "check included; keyboard_app/personal.py), typed on the same future messages",
            "future_messages": sum(map(len, future.values())),
            **personalization_gains(before, after, {u: len(p) for u, p in past.items()}, seed=seed)}


def format_personalization(gains: dict) -> str:
    """The personalization table: before, after, pooled gain (95% interval), users worse."""
    def pct(value):
        return "-" if value is None else f"{100 * value:+.1f}%"

    lines = [f"personalization: {gains['users']} held-out users with at least "
             f"{gains['min_past_messages']} past messages, each learned on the device from "
             "their past messages (the app's PersonalLearner, one pass), typed on their future ones",
             f"{'figure':<12} {'before':>7} {'after':>7} {'gain':>8} {'95% interval':>18} "
             f"{'worse >1%':>10}"]
    for figure, row in gains["figures"].items():
        interval = row["interval_95"]
        shown = f"{pct(interval[0])} to {pct(interval[1])}" if interval else "-"
        before = "-" if row["before"] is None else f"{row['before']:.3f}"
        after = "-" if row["after"] is None else f"{row['after']:.3f}"
        worse = "-" if row["share_worse"] is None else f"{100 * row['share_worse']:.0f}%"
        lines.append(f"{'strip top-3' if figure == 'next_top3' else 'KSR':<12} {before:>7} "
                     f"{after:>7} {pct(row['gain']):>8} {shown:>18} {worse:>10}")
    lines.append("gain by past messages (strip top-3 / KSR, users): " + "; ".join(
        f"{b['past_messages']}: {pct(b['next_top3'])} / {pct(b['ksr'])} ({b['users']})"
        for b in gains["by_past_messages"]))
    return "\n".join(lines)


def personal_plot_data(gains: dict) -> tuple[dict, dict]:
    """`plot_personal_gains`' arguments from `personalization_gains`: per-user gains (%) and
    the pooled gain (%) by past messages (each bucket at its lower edge), by figure label."""
    per_user, by_past = {}, {}
    for figure, label in (("next_top3", "strip top-3"), ("ksr", "KSR")):
        per_user[label] = [100 * g for g in gains["figures"][figure]["per_user"].values()
                           if g is not None]
        points = [(low, 100 * b[figure]) for low, b in zip(PAST_BUCKETS, gains["by_past_messages"])
                  if b[figure] is not None]
        by_past[label] = ([x for x, _ in points], [y for _, y in points])
    return per_user, by_past


def plot_personal_gains(per_user: Mapping[str, Sequence[float]],
                        by_past: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                        path) -> None:
    """Histogram of the users' own gains, and the pooled gain by past messages (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, curve) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, gains in per_user.items():
        hist.hist(gains, bins=20, alpha=0.6, label=f"{label} ({len(gains)} users)")
    for label, (x, y) in by_past.items():  # x: each bucket's start, one of PAST_BUCKETS
        curve.plot([PAST_BUCKETS.index(int(start)) for start in x], y, marker="o", label=label)
    hist.axvline(0, color="black", linewidth=0.8)
    hist.set(xlabel="relative gain of one user (%)", ylabel="users",
             title="Per-user gain from personalizing")
    curve.axhline(0, color="black", linewidth=0.8)
    curve.set_xticks(range(len(PAST_BUCKETS)), ["up to 49", "50-99", "100-199", "200+"])
    curve.set(xlabel="past messages", ylabel="pooled relative gain (%)",
              title="Gain by amount of past text")
    hist.legend(fontsize=8)
    curve.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
