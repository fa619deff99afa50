"""Which clients train, which are held out, and each held-out client's past and future.

Every choice is a seeded hash of the client id (SHA-256, not Python's
salted `hash`), so it depends only on (seed, client id): the same seed gives
the same split on any machine, and adding a client never moves another one.

- Training clients contribute all their texts to the `train` split.
- Held-out clients (default 10%) never train. Their texts, in source order,
  split into `heldout_past` (first 80%) and `heldout_future` (the rest), so
  personalization and local-only baselines can learn from a client's past
  and be scored on its future.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

TRAIN, HELDOUT_PAST, HELDOUT_FUTURE = SPLITS = ("train", "heldout_past", "heldout_future")

T = TypeVar("T")


def unit_hash(client_id: str, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by (purpose, seed, client id)."""
    digest = hashlib.sha256(f"{purpose}\0{seed}\0{client_id}".encode("utf-8"))
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class ClientSplit:
    """Client ids (sorted) on each side of the train / held-out split."""

    train: list[str]
    heldout: list[str]


def split_clients(client_ids: Iterable[str], heldout_fraction: float, seed: int) -> ClientSplit:
    """Holds out each client whose hash falls below `heldout_fraction`.

    With two or more clients each side gets at least one (the client with the
    lowest hash is held out, or the highest one trains), so even a tiny corpus
    can be trained on and evaluated.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    ranked = sorted(set(client_ids), key=lambda c: (unit_hash(c, seed, "heldout"), c))
    cut = sum(1 for c in ranked if unit_hash(c, seed, "heldout") < heldout_fraction)
    if len(ranked) >= 2:
        cut = min(max(cut, 1), len(ranked) - 1)
    return ClientSplit(train=sorted(ranked[cut:]), heldout=sorted(ranked[:cut]))


def past_count(num_texts: int, past_fraction: float) -> int:
    """How many of a held-out client's texts are its past: `past_fraction`, rounded half up,
    and at least one text on each side once the client has two."""
    if num_texts <= 1:
        return num_texts
    return min(max(math.floor(num_texts * past_fraction + 0.5), 1), num_texts - 1)


def split_past_future(texts: Sequence[T], past_fraction: float) -> tuple[list[T], list[T]]:
    """(past, future): the first texts and the rest, in the client's original order."""
    cut = past_count(len(texts), past_fraction)
    return list(texts[:cut]), list(texts[cut:])


def select_clients(client_ids: Iterable[str], count: int, seed: int) -> list[str]:
    """`count` clients chosen by the seed (all if there are fewer), sorted."""
    ranked = sorted(set(client_ids), key=lambda c: (unit_hash(c, seed, "select"), c))
    return sorted(ranked[:count])


def split_problem(train: int, heldout: int, future: int) -> str | None:
    """Why a split of `train` training clients and `heldout` held-out ones, `future` of them
    with texts left for their future, cannot be trained and evaluated; None if it can."""
    if train and future:
        return None
    return (f"{train} training and {heldout} held-out client(s), {future} of them with 2 or more "
            "texts; FedKB needs at least 2 clients: one to train on and one held out with 2 or "
            "more texts (its past and its future)")
