"""From a client id to the batches that client trains on, inside TFF.

Datasets are built on the clients from their ids (`dataset_computation`), so
a round reads only the sampled clients' rows of the SQL store and the
server side of the program only ever handles client ids. Client selection is
a `tff.program.FederatedDataSource` whose iterator is seeded and saved with
the program state, so a resumed run samples the same clients (and simulates
the same client failures) as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
import json

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_pipeline.training.participation import RoundPlan, plan_round


def to_model_batches(examples: tf.data.Dataset, *, batch_size: int, epochs: int = 1,
                     max_examples: int | None = None, shuffle_seed: int | None = None
                     ) -> tf.data.Dataset:
    """Stored windows {"tokens": [T+1]} -> batches (x [B, T] int32, y [B, T] int32)."""
    if max_examples is not None:
        examples = examples.take(max_examples)
    if shuffle_seed is not None:
        examples = examples.shuffle(max_examples or 1024, seed=shuffle_seed,
                                    reshuffle_each_iteration=True)
    tokens = examples.map(lambda e: tf.cast(e["tokens"], tf.int32))
    return (tokens.repeat(epochs)
            .batch(batch_size)
            .map(lambda t: (t[:, :-1], t[:, 1:])))


def build_dataset_computation(client_data: tff.simulation.datasets.ClientData, *,
                              batch_size: int, epochs: int = 1, max_examples: int | None = None,
                              shuffle_seed: int | None = None) -> tff.Computation:
    """A TFF computation: client id (string) -> that client's model batches."""
    dataset_fn = client_data.serializable_dataset_fn

    @tff.tensorflow.computation(tf.string)
    def client_batches(client_id):
        return to_model_batches(dataset_fn(client_id), batch_size=batch_size, epochs=epochs,
                                max_examples=max_examples, shuffle_seed=shuffle_seed)

    return client_batches


class SeededClientIterator(tff.program.FederatedDataSourceIterator):
    """Seeded selection of each round's cohort, with simulated client failures.

    `select(k)` is where the server picks a round's clients, so it is where
    FedKB simulates a real fleet (`participation.plan_round`): it invites
    ceil(over_select x k) clients, drops those that fail mid-round, and
    returns the first k to report, or no client at all when too few
    reported and the round is skipped (`SkipBadRounds` then keeps the
    state). Round r of seed s always gives the same cohort, and the
    iterator state (ids, seed, round, fault settings) is saved with the
    program state, so a resumed run replays the same faults."""

    def __init__(self, client_ids: Sequence[str], seed: int, round_num: int = 0,
                 dropout: float = 0.0, over_select: float = 1.0):
        if not client_ids:
            raise ValueError("SeededClientIterator needs at least one client id")
        self._client_ids = list(client_ids)
        self._seed = seed
        self._round = round_num
        self._dropout = dropout
        self._over_select = over_select

    @property
    def federated_type(self):
        return tff.FederatedType(np.str_, tff.CLIENTS)

    def plan(self, k: int) -> RoundPlan:
        """The next round's participation, without advancing."""
        return plan_round(self._client_ids, self._seed, self._round, k, self._dropout,
                          self._over_select)

    def select(self, k: int | None = None) -> list[str]:
        if k is None or not 0 < k <= len(self._client_ids):
            raise ValueError(f"expected 0 < k <= {len(self._client_ids)} clients, got {k}")
        plan = self.plan(k)
        self._round += 1
        return list(plan.aggregated)

    def to_bytes(self) -> bytes:
        state = {"seed": self._seed, "round": self._round, "client_ids": self._client_ids,
                 "dropout": self._dropout, "over_select": self._over_select}
        return json.dumps(state).encode("utf-8")

    @classmethod
    def from_bytes(cls, buffer: bytes) -> "SeededClientIterator":
        state = json.loads(buffer.decode("utf-8"))
        return cls(state["client_ids"], state["seed"], state["round"],
                   state.get("dropout", 0.0), state.get("over_select", 1.0))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeededClientIterator) and self._key() == other._key()

    def _key(self):
        return (self._client_ids, self._seed, self._round, self._dropout, self._over_select)


class SeededClientDataSource(tff.program.FederatedDataSource):
    """Client ids as a federated data source with seeded sampling."""

    def __init__(self, client_ids: Sequence[str], seed: int, dropout: float = 0.0,
                 over_select: float = 1.0):
        self._client_ids = list(client_ids)
        self._seed = seed
        self._dropout = dropout
        self._over_select = over_select

    @property
    def federated_type(self):
        return tff.FederatedType(np.str_, tff.CLIENTS)

    def iterator(self) -> SeededClientIterator:
        return SeededClientIterator(self._client_ids, self._seed, dropout=self._dropout,
                                    over_select=self._over_select)
