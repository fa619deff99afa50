"""Who takes part in a round: sampling, clients that fail mid-round, over-selection.

Phones drop out of rounds all the time (they lose the network, get unplugged,
the user picks them up). Production servers therefore over-select: they
invite more clients than they need and close the round once enough updates
have arrived, and they abandon a round that does not reach its target
(Bonawitz et al., 2019, "Towards Federated Learning at Scale").

FedKB simulates this on the server side, before a round runs, as a pure
function of (seed, round): `plan_round` invites ceil(over_select x k)
clients (uniformly, without replacement), lets each fail with probability
`dropout`, orders the others by a random finish time and aggregates the
first k to report; reports that come after the round closed are discarded.
The same seed gives the same plan on any machine, so a resumed run, the
run's summary and a test can replay every round.

A round is skipped when fewer than `min_reports(k)` = ceil(k / 2) clients
report. Why a majority of the planned cohort, not "at least one":
- an average over m clients has about k/m times the variance the server
  tuned its learning rate and rounds for; below k/2 that is more than
  double, and one client's update would weigh at least twice its share;
- with differential privacy, TFF's DP mean divides the noised sum by the
  planned cohort k (a fixed denominator, which keeps one client's influence
  bounded), so with few reports the noise swamps what little signal is left;
- secure aggregation protocols likewise need a threshold of survivors to
  finish a round at all, commonly a majority.
A round with no report at all is always skipped (k = 1 needs its one client).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def min_reports(clients_per_round: int) -> int:
    """Reports a round needs to be aggregated: a majority of the planned cohort, at least 1."""
    return max(1, math.ceil(clients_per_round / 2))


def invited(clients_per_round: int, over_select: float, population: int) -> int:
    """How many clients the server invites: ceil(over_select x k), at most everyone."""
    return min(population, math.ceil(over_select * clients_per_round - 1e-9))


@dataclass(frozen=True)
class RoundPlan:
    """One round's participation. Client ids keep the order they were sampled in."""

    round_num: int  # 1-based, as in metrics.csv
    sampled: tuple[str, ...]  # invited to the round
    failed: tuple[str, ...]  # dropped out mid-round: their update never arrives
    late: tuple[str, ...]  # reported after the first k had: discarded
    aggregated: tuple[str, ...]  # whose updates the server averages (empty when skipped)
    skipped: bool  # too few reports: the model and server state stay as they were

    def counts(self) -> dict[str, int]:
        """The plan as numbers, for metrics.csv."""
        return {"sampled": len(self.sampled), "failed": len(self.failed), "late": len(self.late),
                "aggregated": len(self.aggregated), "skipped": int(self.skipped)}


def plan_round(client_ids: Sequence[str], seed: int, round_index: int, clients_per_round: int,
               dropout: float = 0.0, over_select: float = 1.0) -> RoundPlan:
    """The participation of round `round_index` + 1 (0-based index, as the iterator counts)."""
    k = clients_per_round
    if not 0 < k <= len(client_ids):
        raise ValueError(f"expected 0 < clients_per_round <= {len(client_ids)} clients, got {k}")
    n = invited(k, over_select, len(client_ids))
    # The sampling stream is the one FedKB always used, so without faults and
    # over-selection a round samples exactly the clients it did before.
    chosen = np.random.default_rng([seed, round_index]).choice(len(client_ids), size=n, replace=False)
    sampled = tuple(client_ids[i] for i in chosen)
    # Faults come from a stream of their own: the dropout rate never changes who is invited.
    faults = np.random.default_rng([seed, round_index, 1])
    fails = faults.random(n) < dropout
    finish_time = faults.random(n)
    report_order = [i for i in np.argsort(finish_time, kind="stable") if not fails[i]]
    on_time, late = set(report_order[:k]), report_order[k:]
    skipped = len(on_time) < min_reports(k)
    return RoundPlan(
        round_num=round_index + 1,
        sampled=sampled,
        failed=tuple(sampled[i] for i in range(n) if fails[i]),
        late=tuple(sampled[i] for i in sorted(late)),
        aggregated=() if skipped else tuple(sampled[i] for i in range(n) if i in on_time),
        skipped=skipped,
    )


def plan_rounds(client_ids: Sequence[str], seed: int, rounds: int, clients_per_round: int,
                dropout: float = 0.0, over_select: float = 1.0) -> list[RoundPlan]:
    """Every round's plan of a run, replayed from its settings."""
    return [plan_round(client_ids, seed, r, clients_per_round, dropout, over_select)
            for r in range(rounds)]


def participation_summary(plans: Sequence[RoundPlan], clients_per_round: int, dropout: float,
                          over_select: float) -> dict:
    """What summary.json says about participation over a whole run."""
    aggregated = [len(p.aggregated) for p in plans if not p.skipped]
    return {
        "dropout": dropout,
        "over_select": over_select,
        "invited_per_round": len(plans[0].sampled) if plans else 0,
        "min_reports": min_reports(clients_per_round),
        "failed_clients": sum(len(p.failed) for p in plans),
        "late_reports_discarded": sum(len(p.late) for p in plans),
        "skipped_rounds": [p.round_num for p in plans if p.skipped],
        "mean_aggregated_per_round": float(np.mean(aggregated)) if aggregated else 0.0,
    }
