"""The federated training program: TFF's `train_model` program logic, wired
to FedKB's run directory.

`tff.learning.programs.train_model` runs the rounds, saves program state
(model, optimizer, round number, client-sampling iterator) so a killed run
resumes where it stopped, hands checkpoints to an `EvaluationManager` that
runs `build_fed_eval` on held-out clients every K rounds, and releases
metrics. FedKB supplies the pieces around it: the run directory, seeded
client sampling with simulated client failures (`participation`),
checkpoints every K rounds that are trusted only once complete and intact
(`checkpoints`), metrics to CSV/TensorBoard, a progress bar, the final Keras
weights, and a clear error when the run directory cannot be written.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_federated as tff
from tqdm.auto import tqdm

from datasets.errors import FedKBError
from datasets.layout import fedkb_command
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import (CHECKPOINTS, EVAL_METRICS, FINAL_WEIGHTS, TENSORBOARD, TRAIN_METRICS,
                                 WORKER_LOG, init_weights)
from fl_pipeline.training.checkpoint_manifest import usable_versions
from fl_pipeline.training.checkpoints import CheckpointManager, EvaluationState, VerifiedStateManager
from fl_pipeline.training.client_data import SeededClientDataSource
from fl_pipeline.training.learning_process import (SkipBadRounds, build_evaluation_process,
                                                   build_training_process, divergence)
from fl_pipeline.training.participation import min_reports, plan_round
from fl_pipeline.training.releases import (KerasWeightsRelease, ReleaseBarrier, RoundsCSV,
                                           TensorBoardScalars)
from fl_pipeline.training.runtime import WorkerError, federated_context
from fl_pipeline.training.write_errors import write_failure
from models.next_word import ModelConfig, build_model


async def drop_evaluations_after(checkpoints: Path, last_round: int) -> None:
    """Before resuming from `last_round`: forget evaluations that a killed
    process started for later rounds. Training redoes those rounds and starts
    their evaluations again; TFF would otherwise find them twice."""
    evaluations = VerifiedStateManager(checkpoints / "eval_manager")
    no_evaluations = (np.zeros([0], np.int32), np.zeros([0], np.int32))
    state, version = await evaluations.load_latest(no_evaluations)
    if state is not None and (state[0] > last_round).any():
        keep = state[0] <= last_round
        await evaluations.save((state[0][keep], state[1][keep]), version + 1)
    for path in checkpoints.glob("evaluation_of_train_round_*"):
        if int(path.name.rsplit("_", 1)[1]) > last_round:
            shutil.rmtree(path)


class RunDirWriteError(FedKBError):
    """The run directory could not be written (disk full, read-only, no permission)."""

    @classmethod
    def describe(cls, run_dir: Path, said: str, fix: str) -> "RunDirWriteError":
        usable, _ = usable_versions(run_dir / CHECKPOINTS)
        kept = (f"the last complete checkpoint (round {max(usable)}) is intact" if usable
                else "no checkpoint was complete yet")
        return cls(f"{run_dir}: cannot write ({said}); {kept}; {fix}, then continue with "
                   f"`{fedkb_command('train', '--resume', run_dir)}`")


class WithParticipation(tff.program.ReleaseManager):
    """Adds each round's participation (sampled, failed, late, aggregated,
    skipped) to its training metrics, replayed from the seed, and says when
    a round was skipped or diverged (`SkipBadRounds`)."""

    def __init__(self, inner: tff.program.ReleaseManager, client_ids, clients_per_round: int,
                 config: TrainConfig, progress: "ProgressBar"):
        self._inner = inner
        self._client_ids = client_ids
        self._k = clients_per_round
        self._config = config
        self._progress = progress

    async def release(self, value, key) -> None:
        plan = plan_round(self._client_ids, self._config.seed, key - 1, self._k,
                          self._config.dropout, self._config.over_select)
        if plan.skipped:
            reported = len(plan.sampled) - len(plan.failed)
            self._progress.note(f"round {key} skipped: {reported} of {len(plan.sampled)} invited "
                                f"clients reported, {min_reports(self._k)} needed; the model is "
                                "unchanged")
        if find_metric(value, "diverged"):
            reasons = divergence(float(find_metric(value, "token_loss")),
                                 bool(find_metric(value, "update_non_finite")),
                                 float(find_metric(value, "reference_loss")),
                                 use_client_loss=self._config.dp_noise_multiplier is None)
            undid = int(find_metric(value, "undid_round") or 0)
            kept = (f"the model it was sent looked broken (a second diverged round in a row), so "
                    f"round {undid} is undone: back to the state it started from" if undid
                    else "the model is unchanged")
            self._progress.note(f"round {key} diverged and was skipped: {' and '.join(reasons)}; "
                                f"{kept}")
        await self._inner.release({**value, "participation": plan.counts()}, key)


class ProgressBar:
    """A tqdm bar for the run: round, training loss and top-3, held-out top-3, ETA.

    Fed by two release managers, one for training and one for evaluation
    metrics, so it needs no hook inside TFF's program logic."""

    def __init__(self, total_rounds: int, enabled: bool = True):
        self.bar = tqdm(total=total_rounds, unit="round", desc="federated training",
                        disable=not enabled, dynamic_ncols=True)
        self.postfix: dict[str, str] = {}
        self.skipped = 0

    def round_done(self, round_num: int, metrics) -> None:
        self.bar.update(round_num - self.bar.n)  # a resumed run starts past 0
        if find_metric(metrics, "skipped") or find_metric(metrics, "diverged"):  # nothing applied
            self.skipped += 1
            self.postfix["skipped"] = str(self.skipped)
        else:
            self.postfix.update(loss=f"{float(find_metric(metrics, 'token_loss')):.3f}",
                                top3=f"{float(find_metric(metrics, 'top3_accuracy')):.3f}")
        self.bar.set_postfix(self.postfix)

    def note(self, message: str) -> None:
        """A line above the bar (or on stderr without one)."""
        self.bar.write(message, file=sys.stderr)

    def evaluation_done(self, metrics) -> None:
        self.postfix["heldout_top3"] = f"{float(find_metric(metrics, 'top3_accuracy')):.3f}"
        self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        self.bar.close()


class TrainProgress(tff.program.ReleaseManager):
    def __init__(self, progress: ProgressBar):
        self._progress = progress

    async def release(self, value, key) -> None:
        self._progress.round_done(key, value)


class EvalProgress(tff.program.ReleaseManager):
    def __init__(self, progress: ProgressBar):
        self._progress = progress

    async def release(self, value, key) -> None:
        self._progress.evaluation_done(value)


def find_metric(structure, name: str):
    """The first value called `name` anywhere in a nested metrics structure."""
    if isinstance(structure, dict):
        if name in structure:
            return structure[name]
        for child in structure.values():
            found = find_metric(child, name)
            if found is not None:
                return found
    return None


async def _train(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
                 progress: ProgressBar) -> None:
    fed_avg = build_training_process(model_config, config, store.client_data("train"))
    evaluation = build_evaluation_process(model_config, store.client_data("heldout_future"))
    train_ids = store.client_ids("train")
    heldout_ids = store.client_ids("heldout_future")
    per_round = min(config.clients_per_round, len(train_ids))
    train_data = SeededClientDataSource(train_ids, config.seed, dropout=config.dropout,
                                        over_select=config.over_select)

    # The seed fixes the initial model: TFF's `initialize` would draw it anew. With
    # --init-from, the run's copy of the warm start replaces it (a resumed run then loads
    # its checkpoint over it, as it does over the random one).
    initial_model = build_model(model_config, seed=config.seed, weights_file=init_weights(run_dir))
    initial_weights = tff.learning.models.ModelWeights.from_model(initial_model)
    state = await tff.program.materialize_value(fed_avg.initialize())
    state = await tff.program.materialize_value(fed_avg.set_model_weights(state, initial_weights))

    checkpoints = run_dir / CHECKPOINTS
    barrier = ReleaseBarrier()  # a checkpoint waits for its rounds' releases (`releases`)
    checkpoint_manager = CheckpointManager(checkpoints, config.checkpoint_every, config.rounds,
                                           barrier=barrier)
    # Find the checkpoint to resume from before TFF does (skipping damaged
    # ones, or stopping when none is usable), so evaluations and metrics rows
    # of later rounds are dropped first; `train_model` then loads the same version.
    _, resumed_from = await checkpoint_manager.load_latest(
        tff.learning.programs.ProgramState(state, 0, 0, train_data.iterator()))
    train_csv = RoundsCSV(run_dir / TRAIN_METRICS)
    eval_csv = RoundsCSV(run_dir / EVAL_METRICS)
    for rows in (train_csv, eval_csv):
        rows.forget_after(resumed_from)
    if resumed_from:
        await drop_evaluations_after(checkpoints, resumed_from)
    training = SkipBadRounds(fed_avg, vocab_size=model_config.vocab_size,
                             use_client_loss=config.dp_noise_multiplier is None,
                             past_rounds=train_csv.rows())
    train_metrics = barrier.track(WithParticipation(tff.program.GroupingReleaseManager([
        train_csv,
        TensorBoardScalars(run_dir / TENSORBOARD / "train"),
        TrainProgress(progress),
    ]), train_ids, per_round, config, progress))
    eval_metrics = tff.program.GroupingReleaseManager([
        eval_csv,
        TensorBoardScalars(run_dir / TENSORBOARD / "heldout"),
        EvalProgress(progress),
    ])
    evaluation_manager = tff.learning.programs.EvaluationManager(
        data_source=SeededClientDataSource(heldout_ids, config.seed),
        aggregated_metrics_manager=eval_metrics,
        create_state_manager_fn=lambda name: (
            EvaluationState if name.startswith("evaluation_of_") else VerifiedStateManager)(
                checkpoints / name),
        create_process_fn=lambda name: (evaluation, None),
        cohort_size=min(config.eval_clients, len(heldout_ids)),
        duration=datetime.timedelta(0),  # one evaluation round per checkpoint
    )
    await tff.learning.programs.train_model(
        train_process=training,
        initial_train_state=state,
        train_data_source=train_data,
        train_per_round_clients=per_round,
        train_total_rounds=config.rounds,
        program_state_manager=checkpoint_manager,
        model_output_manager=barrier.track(
            KerasWeightsRelease(run_dir / FINAL_WEIGHTS, model_config)),
        train_metrics_manager=train_metrics,
        evaluation_manager=evaluation_manager,
        evaluation_periodicity=config.eval_every,
    )


async def _stop_on_background_failure(program) -> None:
    """Runs `program`, failing as soon as one of its background tasks fails.

    `train_model` saves checkpoints and releases metrics in asyncio tasks
    whose exceptions end up in the event loop's exception handler: logged,
    and training would go on without checkpoints. Here the first such
    failure cancels the program and is raised in its place."""
    main = asyncio.current_task()
    failures: list[BaseException] = []

    def on_failure(loop, context):
        exc = context.get("exception")
        if exc is None:
            loop.default_exception_handler(context)
            return
        failures.append(exc)
        main.cancel()

    asyncio.get_running_loop().set_exception_handler(on_failure)
    try:
        await program
    except asyncio.CancelledError:
        if failures:
            raise failures[0] from None
        raise


def run_program(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
                show_progress: bool = True) -> None:
    """Runs (or resumes) the rounds of `config` in `run_dir`; workers stop on exit.

    A write that fails because of the disk (full, read-only, no permission)
    becomes a one-line `RunDirWriteError` naming the last good checkpoint."""
    progress = ProgressBar(config.rounds, enabled=show_progress)
    try:
        with federated_context(config.workers, run_dir / WORKER_LOG, config.worker_timeout):
            asyncio.run(_stop_on_background_failure(
                _train(run_dir, store, model_config, config, progress)))
    except WorkerError as e:
        raise WorkerError(f"{e}; the run can continue from its last checkpoint with "
                          f"`{fedkb_command('train', '--resume', run_dir)}`") from None
    except Exception as e:
        failure = write_failure(e)
        if failure is None:
            raise
        raise RunDirWriteError.describe(run_dir, *failure) from None
    finally:
        progress.close()
