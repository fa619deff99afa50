"""Where a run's per-round outputs go, written so that a crash loses none.

`train_model` saves the program state (the checkpoint) and releases the
round's metrics and model in concurrent asyncio tasks, so either may reach
the disk first. A process killed after checkpoint N is complete but before
round N's metrics row is written would resume at N + 1 and lose that row for
good. Three rules make the run directory crash-consistent:

1. Every release goes through `ReleaseBarrier.track`, and a checkpoint of
   round N is written only once every release of rounds up to N is on disk
   (`CheckpointManager` awaits `ReleaseBarrier.wait_through`). Whatever a
   kill interrupts, the rounds a resume skips have all their outputs.
2. A release of round N replaces round N's row and nothing else
   (`RoundsCSV`): a round trained again after a resume, or an evaluation
   restarted by TFF's `EvaluationManager`, is recorded exactly once. Each
   write replaces the whole file atomically, so a row is never half-written.
3. TensorBoard events are flushed after every release (`TensorBoardScalars`;
   TFF's own manager leaves them buffered for up to two minutes). A step
   written again after a resume carries the same value, because training
   and evaluation are deterministic for a seed.

On resume, `RoundsCSV.forget_after(N)` drops rows of rounds that will be
trained again, so the file always describes one line of rounds.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from models.next_word import ModelConfig, build_model


def flatten_metrics(value, prefix: str = "") -> dict[str, float]:
    """Nested metrics named by their paths, as TFF's CSV manager names them
    (`model_metrics/token_loss`); empty structures (a stateless distributor's
    `()`) have no value and give no column."""
    if isinstance(value, Mapping):
        children = value.items()
    elif isinstance(value, (list, tuple)):
        children = enumerate(value)
    else:
        return {prefix.rstrip("/"): np.asarray(value).tolist()}
    flat: dict[str, float] = {}
    for name, child in children:
        flat.update(flatten_metrics(child, f"{prefix}{name}/"))
    return flat


def write_text_atomically(path: Path, text: str) -> None:
    """Writes `text` to `path` whole or not at all (temporary file, fsync, rename)."""
    partial = path.with_name(f"partial.{path.name}")
    with open(partial, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


class RoundsCSV(tff.program.ReleaseManager):
    """One CSV row per round, keyed by the `round` column; a release of round N
    replaces round N's row and keeps every other. Reads the file TFF's
    `CSVFileReleaseManager` wrote for older runs, with the same column names."""

    KEY = "round"

    def __init__(self, path: Path):
        self._path = path
        self._rows: dict[int, dict] = {}
        if path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                self._rows = {int(row[self.KEY]): row for row in csv.DictReader(f)}

    def rows(self) -> list[dict]:
        """The rows so far, oldest round first."""
        return [self._rows[key] for key in sorted(self._rows)]

    def forget_after(self, last_round: int) -> None:
        """Drops the rows of rounds after `last_round`: a resume trains them again."""
        if any(key > last_round for key in self._rows):
            self._rows = {k: row for k, row in self._rows.items() if k <= last_round}
            self._write()

    async def release(self, value, key: int) -> None:
        value = await tff.program.materialize_value(value)
        self._rows[int(key)] = {self.KEY: int(key), **flatten_metrics(value)}
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(name for row in self._rows.values() for name in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns or [self.KEY])
        writer.writeheader()
        writer.writerows(self._rows[key] for key in sorted(self._rows))
        write_text_atomically(self._path, text.getvalue())


class TensorBoardScalars(tff.program.ReleaseManager):
    """Each metric as a TensorBoard scalar at step = round, flushed at once."""

    def __init__(self, log_dir: Path):
        self._writer = tf.summary.create_file_writer(str(log_dir))

    async def release(self, value, key: int) -> None:
        value = await tff.program.materialize_value(value)
        with self._writer.as_default():
            for name, number in flatten_metrics(value).items():
                if np.ndim(number) == 0:
                    tf.summary.scalar(name, number, step=int(key))
        self._writer.flush()


class KerasWeightsRelease(tff.program.ReleaseManager):
    """Writes the released model as Keras weights; the last release is the final model.

    Written under a temporary name and renamed, so the file is never half-written."""

    def __init__(self, path: Path, model_config: ModelConfig):
        self._path = path
        self._model = build_model(model_config)

    async def release(self, value, key) -> None:
        value.global_model_weights.assign_weights_to(self._model)
        partial = self._path.with_name("partial." + self._path.name)  # keeps the .h5 suffix
        self._model.save_weights(str(partial))
        os.replace(partial, self._path)


def round_of(key) -> int:
    """The training round a release is for: an int key, or TFF's
    `training_checkpoint_round_N` for model releases."""
    return key if isinstance(key, (int, np.integer)) else int(str(key).rsplit("_", 1)[1])


class ReleaseBarrier:
    """Knows which releases of which rounds are still on their way to disk."""

    def __init__(self):
        self._pending: dict[int, list[asyncio.Future]] = defaultdict(list)

    def track(self, inner: tff.program.ReleaseManager) -> tff.program.ReleaseManager:
        return _Tracked(inner, self)

    def _started(self, round_num: int) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        self._pending[round_num].append(done)
        return done

    async def wait_through(self, round_num: int) -> None:
        """Returns once every release of rounds <= `round_num` asked for so far is written."""
        waiting = [f for r, futures in self._pending.items() if r <= round_num for f in futures]
        await asyncio.gather(*waiting)
        for r in [r for r in self._pending if r <= round_num]:
            del self._pending[r]


class _Tracked(tff.program.ReleaseManager):
    """A release manager whose releases the barrier waits for.

    `release` is a plain method that registers the release the moment
    `train_model` asks for it, before any task runs: `train_model` queues the
    checkpoint of round N just before round N's releases, and the checkpoint
    must already see them when it starts waiting."""

    def __init__(self, inner: tff.program.ReleaseManager, barrier: ReleaseBarrier):
        self._inner = inner
        self._barrier = barrier

    def release(self, value, key):
        done = self._barrier._started(round_of(key))
        return self._release(value, key, done)

    async def _release(self, value, key, done: asyncio.Future) -> None:
        try:
            await self._inner.release(value, key)
        except BaseException:
            done.cancel()  # the checkpoint waiting for it is not written; the failure stops the run
            raise
        done.set_result(None)
