"""The TFF learning and evaluation processes.

Everything here is TFF's own building blocks, composed: a Keras model
wrapped by `tff.learning.models.from_keras_model`, weighted FedAvg with a
selectable server optimizer (FedAdam by default), an aggregator chosen by the
privacy/communication options, and `build_fed_eval` for held-out clients.
Both processes take client ids and build each client's dataset on the
client (see `client_data.build_dataset_computation`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from fl_pipeline.client_data import build_dataset_computation
from fl_pipeline.config import TrainConfig
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


def model_update_aggregator(config: TrainConfig):
    """The aggregator the privacy/communication options ask for (None = weighted mean)."""
    if config.dp_noise_multiplier is not None:
        # zeroing=False: TFF's default zeroing threshold adapts to the clients'
        # update norms without noise, outside the (epsilon, delta) accounting.
        # Clipping already bounds every update; a non-finite one makes the
        # finalizer reject the round.
        return tff.learning.dp_aggregator(config.dp_noise_multiplier, config.clients_per_round,
                                          zeroing=False)
    if config.secure_agg:
        return tff.learning.secure_aggregator(weighted=True)
    if config.compress:
        return tff.learning.compression_aggregator(weighted=True)
    return None


def build_training_process(model_config: ModelConfig, config: TrainConfig,
                           client_data: tff.simulation.datasets.ClientData
                           ) -> tff.learning.templates.LearningProcess:
    """FedAvg over client ids: `next(state, [client ids])`."""
    common = dict(
        model_fn=tff_model_fn(model_config),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(config.client_lr),
        server_optimizer_fn=server_optimizer(config),
        model_aggregator=model_update_aggregator(config),
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


class SkipEmptyRounds:
    """The training process as `train_model` drives it, except that a round
    with no clients (skipped: too few reports, see `participation`) leaves
    the whole server state as it was.

    Why not TFF's own mechanisms alone: weighted FedAvg's finalizer already
    rejects the 0/0 mean of an empty cohort (`update_non_finite`), but DP's
    fixed-denominator mean would apply a noise-only update and the adaptive
    clipping/zeroing estimates would still move; and `train_model`'s
    `should_discard_round` retries a round from the previous iterator state,
    which with seeded selection is the same cohort again (a loop), unsaved
    across restarts. So the empty round still runs in TFF, which gives the
    exact metrics of a round in which nothing was trained (all counts 0),
    and its state is dropped. Every other attribute is the wrapped process's.
    """

    def __init__(self, process: tff.learning.templates.LearningProcess):
        self._process = process

    def __getattr__(self, name: str):
        return getattr(self._process, name)

    def next(self, state, clients):
        output = self._process.next(state, clients)
        if len(clients) == 0:
            return tff.learning.templates.LearningProcessOutput(state=state, metrics=output.metrics)
        return output
