"""What a run's privacy and communication options cost, in numbers.

- (epsilon, delta) of user-level differential privacy for a DP run, from the
  `dp_accounting` library: each round is a Gaussian mechanism on a cohort
  sampled without replacement from the training clients, composed over the
  rounds in an RDP accountant.

Bytes on the network are measured in the rounds themselves (`compression`).
"""

from __future__ import annotations

import dp_accounting


def default_delta(num_clients: int) -> float:
    """delta = 1 / N^1.1: below 1/N, as user-level DP needs (McMahan et al., 2018)."""
    return 1.0 / max(num_clients, 1) ** 1.1


def dp_epsilon(noise_multiplier: float, clients_per_round: int, num_clients: int,
               rounds: int, delta: float | None = None) -> tuple[float, float]:
    """(epsilon, delta) after `rounds` rounds of DP-FedAvg."""
    if delta is None:
        delta = default_delta(num_clients)
    if noise_multiplier <= 0:
        return float("inf"), delta
    round_event = dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=num_clients, sample_size=clients_per_round,
        event=dp_accounting.GaussianDpEvent(noise_multiplier))
    # Fixed-size sampling without replacement is analysed for neighbouring
    # datasets that differ by one replaced client.
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SelfComposedDpEvent(round_event, rounds))
    return float(accountant.get_epsilon(delta)), delta
