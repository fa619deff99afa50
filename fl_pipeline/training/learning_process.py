"""The TFF learning and evaluation processes.

Everything here is TFF's own building blocks, composed: a Keras model
wrapped by `tff.learning.models.from_keras_model`, weighted FedAvg with a
selectable server optimizer (FedAdam by default), an aggregator chosen by the
privacy/communication options (every one bounds each client's update), a
guard that skips empty and diverged rounds (`SkipBadRounds`), and
`build_fed_eval` for held-out clients.
Both processes take client ids and build each client's dataset on the
client (see `client_data.build_dataset_computation`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fl_pipeline.config import TrainConfig
from fl_pipeline.training import compression
from fl_pipeline.training.client_data import build_dataset_computation
from models.metrics import MaskedLoss, metric_builders
from models.next_word import ModelConfig, build_model


def batch_spec(model_config: ModelConfig) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    shape = [None, model_config.seq_len]
    return (tf.TensorSpec(shape, tf.int32), tf.TensorSpec(shape, tf.int32))


def tff_model_fn(model_config: ModelConfig) -> Callable[[], tff.learning.models.VariableModel]:
    """A no-argument factory, as TFF wants: each call builds a fresh model."""

    def model_fn():
        return tff.learning.models.from_keras_model(
            build_model(model_config),
            loss=MaskedLoss(),
            input_spec=batch_spec(model_config),
            metrics=metric_builders(),
        )

    return model_fn


def server_lr_at(config: TrainConfig, round_index):
    """The server learning rate of round `round_index` (0-based; a tensor inside TFF)."""
    if config.server_lr_schedule == "constant":
        return config.server_lr
    progress = tf.minimum(tf.cast(round_index, tf.float32) / float(config.rounds), 1.0)
    if config.server_lr_schedule == "linear":
        return config.server_lr * (1.0 - progress)
    return config.server_lr * 0.5 * (1.0 + tf.cos(3.141592653589793 * progress))  # cosine


def server_optimizer(config: TrainConfig) -> tff.learning.optimizers.Optimizer:
    optimizer = _server_optimizer(config)
    if config.server_lr_schedule == "constant":
        return optimizer
    return tff.learning.optimizers.schedule_learning_rate(
        optimizer, lambda round_index: server_lr_at(config, round_index))


def _server_optimizer(config: TrainConfig) -> tff.learning.optimizers.Optimizer:
    lr = config.server_lr
    return {
        "sgd": lambda: tff.learning.optimizers.build_sgdm(lr),
        "momentum": lambda: tff.learning.optimizers.build_sgdm(lr, momentum=0.9),
        "adam": lambda: tff.learning.optimizers.build_adam(lr, epsilon=1e-5),
        "yogi": lambda: tff.learning.optimizers.build_yogi(lr, epsilon=1e-5),
    }[config.server_optimizer]()


def model_update_aggregator(config: TrainConfig, vocab_size: int):
    """The aggregator the privacy/communication options ask for; each bounds client updates.

    Every path except DP and secure aggregation measures its upload
    (`compression.MeasureUpload`): TFF's `robust_aggregator` and
    `compression_aggregator` take a `debug_measurements_fn` that wraps the
    weighted mean they build, TFF's own hook for added measurements."""
    if config.dp_noise_multiplier is not None:
        # zeroing=False: TFF's default zeroing threshold adapts to the clients'
        # update norms without noise, outside the (epsilon, delta) accounting.
        # Clipping already bounds every update; a non-finite one makes the
        # finalizer reject the round.
        return tff.learning.dp_aggregator(config.dp_noise_multiplier, config.clients_per_round,
                                          zeroing=False)
    if config.secure_agg:
        return tff.learning.secure_aggregator(weighted=True)
    if config.compress_tff8:
        # The mean inside is MeanFactory(EncodedSumFactory.quantize_above_threshold(8, 20000)),
        # whose encoder_fn compression.quantize_above(8) is.
        return tff.learning.compression_aggregator(
            weighted=True, debug_measurements_fn=lambda mean: compression.MeasureUpload(
                mean, compression.quantize_above(compression.TFF8_BITS)))
    if config.compress:
        # TFF's adaptive zeroing and clipping (robust_aggregator) around the
        # compressed mean in place of its plain one: the hook is TFF's one
        # public way to put them around another weighted mean.
        mean = compression.compressed_mean(config.compress_bits, config.compress_rows, vocab_size)
        return tff.learning.robust_aggregator(zeroing=True, clipping=True, weighted=True,
                                              debug_measurements_fn=lambda _plain_mean: mean)
    # The default path bounds every client's update too, with the same
    # adaptive zeroing and clipping that secure_aggregator and
    # compression_aggregator apply: on a real chat corpus one client's finite
    # but huge update (its local loss went to 8,999) moved the whole model.
    # Clipping to TFF's adaptive norm (the 0.8 quantile of update norms, an
    # un-noised quantile estimate kept in the aggregator state, so resumes
    # are exact) caps any client at that norm; zeroing drops updates far
    # above all others (and non-finite ones) entirely.
    if not config.clip_updates:  # a run from before the bound, resumed as it was trained
        return compression.MeasureUpload(tff.aggregators.MeanFactory())
    return tff.learning.robust_aggregator(zeroing=True, clipping=True, weighted=True,
                                          debug_measurements_fn=compression.MeasureUpload)


def build_training_process(model_config: ModelConfig, config: TrainConfig,
                           client_data: tff.simulation.datasets.ClientData
                           ) -> tff.learning.templates.LearningProcess:
    """FedAvg over client ids: `next(state, [client ids])`."""
    common = dict(
        model_fn=tff_model_fn(model_config),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(config.client_lr),
        server_optimizer_fn=server_optimizer(config),
        model_aggregator=model_update_aggregator(config, model_config.vocab_size),
        # TFF's broadcast of the model, with what each client receives measured.
        model_distributor=compression.measured_broadcast(
            tff.learning.models.weights_type_from_model(tff_model_fn(model_config))),
    )
    if config.dp_noise_multiplier is not None:
        # dp_aggregator is an unweighted factory: every client counts the same,
        # which is what bounds one person's influence.
        process = tff.learning.algorithms.build_unweighted_fed_avg(**common)
    else:
        process = tff.learning.algorithms.build_weighted_fed_avg(**common)
    datasets = build_dataset_computation(
        client_data, batch_size=config.batch_size, epochs=config.local_epochs,
        max_examples=config.max_examples_per_client, shuffle_seed=config.seed)
    return tff.simulation.compose_dataset_computation_with_learning_process(datasets, process)


def build_evaluation_process(model_config: ModelConfig, client_data: tff.simulation.datasets.ClientData,
                             batch_size: int = 64) -> tff.learning.templates.LearningProcess:
    """Federated evaluation (`build_fed_eval`) of whole client datasets, by client id."""
    process = tff.learning.algorithms.build_fed_eval(tff_model_fn(model_config))
    datasets = build_dataset_computation(client_data, batch_size=batch_size)
    return tff.simulation.compose_dataset_computation_with_learning_process(datasets, process)


# A round diverged when its training loss is above LOSS_FACTOR times the
# reference loss. 2x: a diverging client pushes the round's loss far past it
# (31.3 and 8,999 where rounds were at 5-6 on a real chat corpus), while
# normal rounds stay near their reference (the largest ratio over 30 default
# rounds on the built-in corpus was 1.00, in round 1, where loss = ln V).
LOSS_FACTOR = 2.0
# The reference is an exponential moving average of accepted rounds' losses
# (this much of the old reference is kept per round), so it follows the
# loss down as the model learns but one round cannot move it far.
REFERENCE_DECAY = 0.9


def divergence(loss: float, update_non_finite: bool, reference_loss: float,
               use_client_loss: bool) -> list[str]:
    """The one rule for "this round exploded": why it did, or [] if it did not.

    `update_non_finite` is the finalizer's check of the aggregated update;
    `loss` (the clients' own training loss) counts only if `use_client_loss`.
    """
    reasons = ["the aggregated update was not finite"] if update_non_finite else []
    limit = LOSS_FACTOR * reference_loss
    if use_client_loss and not loss <= limit:  # NaN is not <= anything
        reasons.append(f"training loss {loss:.4g} above {limit:.4g} ({LOSS_FACTOR:g} x the "
                       "reference loss)")
    return reasons


def replay_reference(vocab_size: int, rounds: Sequence[Mapping[str, str | float]]) -> float:
    """The reference loss after the rounds of `metrics.csv` (oldest first), as
    `SkipBadRounds` computed it while training them: a resumed run decides
    exactly as an uninterrupted one. The rows a resume needs are on disk
    whatever a crash interrupted (`releases`); CSV keeps a float32 loss exactly.
    Rows of runs from before the guard (no `guard/diverged`) count as accepted."""
    reference = math.log(vocab_size)
    for row in rounds:
        trained = float(row.get("model_metrics/num_examples") or 0) > 0
        if trained and not float(row.get("guard/diverged") or 0):
            loss = float(row["model_metrics/token_loss"])
            reference = REFERENCE_DECAY * reference + (1 - REFERENCE_DECAY) * loss
    return reference


class _RoundResult(tff.program.MaterializableValueReference):
    """The round's output as `train_model` materializes it, once `SkipBadRounds`
    has seen its metrics (deciding needs values, and `next` cannot await)."""

    def __init__(self, coroutine):
        self._coroutine = coroutine
        self._task = None

    @property
    def type_signature(self):
        return None  # train_model only materializes it

    async def get_value(self):
        if self._task is None:
            self._task = asyncio.ensure_future(self._coroutine)
        return await self._task


class SkipBadRounds:
    """The training process as `train_model` drives it, except that a round
    that trained nothing or diverged leaves the whole server state as it was,
    and a second diverged round in a row goes back one accepted round.

    A round is skipped when it had no clients (too few reports, see
    `participation`), or when it diverged (`divergence`): its aggregated update
    was non-finite, or (without DP) its training loss was non-finite or above
    LOSS_FACTOR x the reference loss. The reference starts at ln(vocabulary
    size), the loss of a uniform guess that an untrained model is close to,
    and follows accepted rounds' losses (REFERENCE_DECAY). It lives here, not
    in TFF's state, so run directories from before the guard still resume;
    a resume replays it from `metrics.csv` (`replay_reference`).

    The clients' loss measures the model they were sent, so a diverged loss
    may blame the previous round: its update was accepted (its own clients
    trained normally) yet broke the model. Seen on chat: one accepted round,
    then 31 rounds in a row skipped with losses of 15-22 from the same
    broken state. So when the loss rule fires in two rounds in a row, the
    state goes back to the one the last accepted round started from (the
    newest state whose clients trained normally), undoing that round;
    `guard/undid_round` names it. A run resumed from a checkpoint does not
    know the state before it, so until its first accepted round it can only
    skip, as a single diverged round does.

    Under DP only the noised aggregate may decide: a rule on the clients'
    own (un-noised) losses would choose which noised updates to apply from
    data outside the (epsilon, delta) accounting. The finalizer's
    `update_non_finite` is a function of the noised aggregate alone.

    Why not TFF's own mechanisms alone: weighted FedAvg's finalizer already
    rejects a non-finite update, such as the 0/0 mean of an empty cohort
    (`update_non_finite`), but it keeps only the model and optimizer: DP's
    fixed-denominator mean would apply a noise-only update and the adaptive
    clipping/zeroing estimates would still move; and `train_model`'s
    `should_discard_round` retries a round from the previous iterator state,
    which with seeded selection is the same cohort again (a loop), unsaved
    across restarts. So a skipped round still runs in TFF, which gives its
    exact metrics (for an empty round all counts 0), and its state is
    dropped; `guard/diverged` marks a diverged one. Every other attribute
    is the wrapped process's.
    """

    def __init__(self, process: tff.learning.templates.LearningProcess, vocab_size: int,
                 use_client_loss: bool = True, past_rounds: Sequence[Mapping] = ()):
        self._process = process
        self._use_client_loss = use_client_loss
        self._reference = replay_reference(vocab_size, past_rounds if use_client_loss else ())
        self._round = len(past_rounds)  # rounds already trained (a resumed run's)
        self._last_accepted = None  # (round, the state it started from), since this process began
        self._loss_diverged = False  # whether the previous round's loss rule fired

    def __getattr__(self, name: str):
        return getattr(self._process, name)

    def next(self, state, clients) -> _RoundResult:
        return _RoundResult(self._next(state, clients))

    async def _next(self, state, clients):
        self._round += 1
        output = await tff.program.materialize_value(self._process.next(state, clients))
        loss = float(output.metrics["client_work"]["train"]["token_loss"])
        trained = len(clients) > 0
        loss_diverged = trained and bool(divergence(loss, False, self._reference,
                                                    self._use_client_loss))
        diverged = trained and (loss_diverged
                                or bool(output.metrics["finalizer"]["update_non_finite"]))
        undo = loss_diverged and self._loss_diverged and self._last_accepted is not None
        undid_round, kept_state = self._last_accepted if undo else (0, state)
        metrics = {**output.metrics, "guard": {"diverged": np.int32(diverged),
                                               "reference_loss": np.float64(self._reference),
                                               "undid_round": np.int32(undid_round)}}
        if trained:
            self._loss_diverged = loss_diverged
        if undo:
            self._last_accepted = None  # that round is undone; the next accepted one sets it
        if not trained or diverged:
            return tff.learning.templates.LearningProcessOutput(state=kept_state, metrics=metrics)
        if self._use_client_loss:
            self._reference = REFERENCE_DECAY * self._reference + (1 - REFERENCE_DECAY) * loss
        self._last_accepted = (self._round, state)
        return tff.learning.templates.LearningProcessOutput(state=output.state, metrics=metrics)
