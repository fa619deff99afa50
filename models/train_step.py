"""One optimizer step of the next-word model in plain TensorFlow, outside TFF.

The server-side baselines (centralized, local-only), the bench's plain loop
and Flower's clients all train with this step, so they take the same step with
the same loss (`MaskedLoss`) that FedKB's federated clients take inside TFF.
It lives here, away from `fl_pipeline`, because Flower's environment cannot
import TFF.
"""

from __future__ import annotations

import tensorflow as tf

from models.metrics import MaskedLoss


def train_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer):
    """`step(x, y) -> loss`: one optimizer step on a batch, traced once for every batch size
    (clients' last batches differ). A whole client's loop over its dataset inside one
    tf.function measured several times slower per client."""
    loss_fn = MaskedLoss()
    batch = tf.TensorSpec([None, model.input_shape[1]], tf.int32)

    @tf.function(input_signature=[batch, batch])
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    return step
