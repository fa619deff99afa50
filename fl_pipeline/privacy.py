"""What a run's privacy and communication options cost, in numbers.

- (epsilon, delta) of user-level differential privacy for a DP run, from the
  `dp_accounting` library: each round is a Gaussian mechanism on a cohort
  sampled without replacement from the training clients, composed over the
  rounds in an RDP accountant.
- Bytes one client uploads per round, from the encoded size of its update:
  float32 values, or 8-bit values for the tensors that TFF's
  `compression_aggregator` quantizes (those above its 20,000-element threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import dp_accounting

# tff.learning.compression_aggregator: EncodedSumFactory.quantize_above_threshold(
#     quantization_bits=8, threshold=20000)
_COMPRESSION_BITS = 8
_COMPRESSION_THRESHOLD = 20_000


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


def upload_bytes(tensor_sizes: Sequence[int], compress: bool = False) -> int:
    """Bytes of one client's model update (plus its float32 weight)."""
    total = 4  # the client's weight (number of examples)
    for size in tensor_sizes:
        if compress and size > _COMPRESSION_THRESHOLD:
            total += size * _COMPRESSION_BITS // 8 + 8  # values + float32 min/max
        else:
            total += 4 * size
    return total
