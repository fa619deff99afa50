"""The federated training program: TFF's `train_model` program logic, wired
to FedKB's run directory.

`tff.learning.programs.train_model` runs the rounds, saves program state
(model, optimizer, round number, client-sampling iterator) so a killed run
resumes where it stopped, hands checkpoints to an `EvaluationManager` that
runs `build_fed_eval` on held-out clients every K rounds, and releases
metrics. FedKB supplies the pieces around it: the run directory, seeded
client sampling, checkpoints every K rounds that are trusted only once
complete, metrics to CSV/TensorBoard, a progress bar, and the final Keras
weights.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
from pathlib import Path

import numpy as np
import tensorflow_federated as tff
from tqdm.auto import tqdm

from fl_pipeline.client_data import SeededClientDataSource
from fl_pipeline.config import TrainConfig
from fl_pipeline.execution import federated_context
from fl_pipeline.process import build_evaluation_process, build_training_process
from models.next_word import ModelConfig, build_model

COMPLETE_MARKER = "COMPLETE"


class CheckpointManager(tff.program.FileProgramStateManager):
    """Saves program state every `every` rounds (and the first and last), and
    lists a checkpoint only after it was written completely, so a process
    killed mid-save resumes from the previous one."""

    def __init__(self, root_dir: Path, every: int, last_round: int, keep_total: int = 3):
        super().__init__(root_dir, keep_total=keep_total, keep_first=False)
        self._every = every
        self._last_round = last_round

    def _is_complete(self, version: int) -> bool:
        return (Path(self._get_path_for_version(version)) / COMPLETE_MARKER).exists()

    async def get_versions(self) -> list[int] | None:
        versions = [v for v in (await super().get_versions() or []) if self._is_complete(v)]
        return versions or None

    async def save(self, program_state, version: int) -> None:
        if version % self._every and version != self._last_round:
            return
        path = Path(self._get_path_for_version(version))
        if path.exists() and not self._is_complete(version):
            shutil.rmtree(path)  # left half-written by a killed process
        await super().save(program_state, version)
        (path / COMPLETE_MARKER).touch()


async def drop_evaluations_after(checkpoints: Path, last_round: int) -> None:
    """Before resuming from `last_round`: forget evaluations that a killed
    process started for later rounds. Training redoes those rounds and starts
    their evaluations again; TFF would otherwise find them twice."""
    evaluations = tff.program.FileProgramStateManager(checkpoints / "eval_manager")
    no_evaluations = (np.zeros([0], np.int32), np.zeros([0], np.int32))
    state, version = await evaluations.load_latest(no_evaluations)
    if state is not None and (state[0] > last_round).any():
        keep = state[0] <= last_round
        await evaluations.save((state[0][keep], state[1][keep]), version + 1)
    for path in checkpoints.glob("evaluation_of_train_round_*"):
        if int(path.name.rsplit("_", 1)[1]) > last_round:
            shutil.rmtree(path)


class KerasWeightsRelease(tff.program.ReleaseManager):
    """Writes the released model as Keras weights; the last release is the final model."""

    def __init__(self, path: Path, model_config: ModelConfig):
        self._path = path
        self._model = build_model(model_config)

    async def release(self, value, key) -> None:
        value.global_model_weights.assign_weights_to(self._model)
        self._model.save_weights(str(self._path))


class ProgressBar:
    """A tqdm bar for the run: round, training loss and top-3, held-out top-3, ETA.

    Fed by two release managers, one for training and one for evaluation
    metrics, so it needs no hook inside TFF's program logic."""

    def __init__(self, total_rounds: int, enabled: bool = True):
        self.bar = tqdm(total=total_rounds, unit="round", desc="federated training",
                        disable=not enabled, dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def round_done(self, round_num: int, metrics) -> None:
        self.bar.update(round_num - self.bar.n)  # a resumed run starts past 0
        self.postfix.update(loss=f"{float(find_metric(metrics, 'token_loss')):.3f}",
                            top3=f"{float(find_metric(metrics, 'top3_accuracy')):.3f}")
        self.bar.set_postfix(self.postfix)

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
    training = build_training_process(model_config, config, store.client_data("train"))
    evaluation = build_evaluation_process(model_config, store.client_data("heldout_future"))
    train_ids = store.client_ids("train")
    heldout_ids = store.client_ids("heldout_future")

    # The seed fixes the initial model: TFF's `initialize` would draw it anew.
    initial_weights = tff.learning.models.ModelWeights.from_model(
        build_model(model_config, seed=config.seed))
    state = await tff.program.materialize_value(training.initialize())
    state = await tff.program.materialize_value(training.set_model_weights(state, initial_weights))

    checkpoints = run_dir / "checkpoints"
    checkpoint_manager = CheckpointManager(checkpoints, config.checkpoint_every, config.rounds)
    resumed_from = await checkpoint_manager.get_versions()
    if resumed_from:
        await drop_evaluations_after(checkpoints, max(resumed_from))
    train_metrics = tff.program.GroupingReleaseManager([
        tff.program.CSVFileReleaseManager(run_dir / "metrics.csv", key_fieldname="round"),
        tff.program.TensorBoardReleaseManager(run_dir / "tensorboard" / "train"),
        TrainProgress(progress),
    ])
    eval_metrics = tff.program.GroupingReleaseManager([
        tff.program.CSVFileReleaseManager(run_dir / "eval_metrics.csv", key_fieldname="round"),
        tff.program.TensorBoardReleaseManager(run_dir / "tensorboard" / "heldout"),
        EvalProgress(progress),
    ])
    evaluation_manager = tff.learning.programs.EvaluationManager(
        data_source=SeededClientDataSource(heldout_ids, config.seed),
        aggregated_metrics_manager=eval_metrics,
        create_state_manager_fn=lambda name: tff.program.FileProgramStateManager(checkpoints / name),
        create_process_fn=lambda name: (evaluation, None),
        cohort_size=min(config.eval_clients, len(heldout_ids)),
        duration=datetime.timedelta(0),  # one evaluation round per checkpoint
    )
    await tff.learning.programs.train_model(
        train_process=training,
        initial_train_state=state,
        train_data_source=SeededClientDataSource(train_ids, config.seed),
        train_per_round_clients=min(config.clients_per_round, len(train_ids)),
        train_total_rounds=config.rounds,
        program_state_manager=checkpoint_manager,
        model_output_manager=KerasWeightsRelease(run_dir / "final_model.weights.h5", model_config),
        train_metrics_manager=train_metrics,
        evaluation_manager=evaluation_manager,
        evaluation_periodicity=config.eval_every,
    )


def run_program(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
                show_progress: bool = True) -> None:
    """Runs (or resumes) the rounds of `config` in `run_dir`; workers stop on exit."""
    progress = ProgressBar(config.rounds, enabled=show_progress)
    try:
        with federated_context(config.workers, log_path=run_dir / "worker.log"):
            asyncio.run(_train(run_dir, store, model_config, config, progress))
    finally:
        progress.close()
