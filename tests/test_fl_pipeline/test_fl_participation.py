"""Who takes part in a round: seeded sampling, client failures, over-selection, skipped rounds.

Pure functions of (seed, round), so these run without TFF rounds; the
end-to-end behaviour (metrics, summary, an unchanged model) is in
test_fl_faults.py.
"""

import math

import numpy as np
import pytest

from fl_pipeline.config import TrainConfig
from fl_pipeline.training.participation import min_reports, plan_round, plan_rounds

CLIENTS = [f"phone-{i:03d}" for i in range(200)]


def test_a_round_is_a_function_of_seed_and_round_only():
    first = plan_round(CLIENTS, seed=3, round_index=5, clients_per_round=10, dropout=0.3,
                       over_select=1.5)
    again = plan_round(CLIENTS, seed=3, round_index=5, clients_per_round=10, dropout=0.3,
                       over_select=1.5)
    assert first == again
    assert plan_round(CLIENTS, 4, 5, 10, 0.3, 1.5) != first
    assert plan_round(CLIENTS, 3, 6, 10, 0.3, 1.5) != first


def test_each_invited_client_is_accounted_for_exactly_once():
    for plan in plan_rounds(CLIENTS, seed=0, rounds=200, clients_per_round=10, dropout=0.3,
                            over_select=1.5):
        assert len(plan.sampled) == 15 and len(set(plan.sampled)) == 15
        reported_on_time = set(plan.sampled) - set(plan.failed) - set(plan.late)
        assert set(plan.failed).isdisjoint(plan.late)
        assert set(plan.aggregated) == (set() if plan.skipped else reported_on_time)
        assert len(plan.aggregated) <= 10
        # late reports exist only once k clients reported
        assert not plan.late or len(reported_on_time) == 10


def test_clients_fail_at_the_requested_rate():
    plans = plan_rounds(CLIENTS, seed=1, rounds=1000, clients_per_round=10, dropout=0.3)
    failed = sum(len(p.failed) for p in plans) / sum(len(p.sampled) for p in plans)
    assert failed == pytest.approx(0.3, abs=0.015)  # 10,000 draws: 3 standard deviations


def test_too_few_reports_skip_the_round_and_a_majority_does_not():
    assert [min_reports(k) for k in (1, 2, 3, 4, 10, 11)] == [1, 1, 2, 2, 5, 6]
    plans = plan_rounds(CLIENTS, seed=2, rounds=1000, clients_per_round=4, dropout=0.3)
    for plan in plans:
        reported = len(plan.sampled) - len(plan.failed)
        assert plan.skipped == (reported < 2)
        assert plan.aggregated == (() if plan.skipped else
                                   tuple(c for c in plan.sampled if c not in plan.failed))
    # P(fewer than 2 of 4 report) = 0.3^4 + 4 * 0.7 * 0.3^3 = 8.4%
    assert sum(p.skipped for p in plans) / len(plans) == pytest.approx(0.084, abs=0.03)


def test_over_selection_keeps_rounds_full_despite_dropouts():
    def run(over_select):
        plans = plan_rounds(CLIENTS, seed=4, rounds=2000, clients_per_round=10, dropout=0.3,
                            over_select=over_select)
        return (np.mean([len(p.aggregated) for p in plans]), sum(p.skipped for p in plans),
                sum(len(p.late) for p in plans))

    plain_mean, plain_skipped, plain_late = run(1.0)
    over_mean, over_skipped, over_late = run(1.5)
    def expected(invited):  # E[min(R, 10) if R >= 5 else 0], R ~ Binomial(invited, 0.7) reports
        return sum(min(r, 10) * math.comb(invited, r) * 0.7**r * 0.3**(invited - r)
                   for r in range(5, invited + 1))

    assert plain_mean == pytest.approx(expected(10), abs=0.15) and plain_late == 0
    assert over_mean == pytest.approx(expected(15), abs=0.15) and over_late > 0
    assert over_mean > plain_mean + 2 and over_skipped < plain_skipped / 10


def test_without_faults_a_round_samples_what_seeded_sampling_always_gave():
    for r in range(20):
        plan = plan_round(CLIENTS, seed=7, round_index=r, clients_per_round=10)
        chosen = np.random.default_rng([7, r]).choice(len(CLIENTS), size=10, replace=False)
        assert plan.aggregated == plan.sampled == tuple(CLIENTS[i] for i in chosen)
        assert not plan.failed and not plan.late and not plan.skipped


def test_over_selection_never_invites_more_clients_than_exist():
    plan = plan_round(CLIENTS[:12], seed=0, round_index=0, clients_per_round=10, over_select=2.0)
    assert len(plan.sampled) == 12 and len(plan.aggregated) == 10
    assert len(plan_round(CLIENTS, 0, 0, 3, over_select=1.34).sampled) == math.ceil(3 * 1.34)


def test_the_iterator_replays_the_plans_and_resumes_from_its_bytes():
    from fl_pipeline.training.client_data import SeededClientIterator

    iterator = SeededClientIterator(CLIENTS[:30], seed=5, dropout=0.5, over_select=1.25)
    plans = plan_rounds(CLIENTS[:30], seed=5, rounds=40, clients_per_round=4, dropout=0.5,
                        over_select=1.25)
    selected = [iterator.select(4) for _ in range(20)]
    restored = SeededClientIterator.from_bytes(iterator.to_bytes())
    assert restored == iterator
    selected += [restored.select(4) for _ in range(20)]
    assert selected == [list(p.aggregated) for p in plans]
    assert [] in selected  # a skipped round hands the process no client


def test_an_iterator_saved_before_faults_existed_still_loads():
    from fl_pipeline.training.client_data import SeededClientIterator

    old_bytes = b'{"seed": 1, "round": 3, "client_ids": ["a", "b", "c"]}'
    iterator = SeededClientIterator.from_bytes(old_bytes)
    assert iterator == SeededClientIterator(["a", "b", "c"], 1, 3)


@pytest.mark.parametrize("settings, message", [
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"dropout": -0.1}, "dropout must be in [0, 1)"),
    ({"over_select": 0.5}, "over_select must be between 1 and 10"),
])
def test_fault_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrainConfig(**settings)
