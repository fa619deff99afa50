"""The model that runs on the phone: the federated model frozen, plus a trainable personal layer.

`fl_pipeline/export.py` converts an `OnDeviceModel` to TFLite (LiteRT's builtin kernels
only, no Flex delegate); the app (`keyboard_app/predictor.py`) calls its four signatures,
whose names and tensors `models/contract.py` fixes. They have the shape of TFLite's
on-device training example (and Flower's):

    suggest(context int32 [1, T])                  -> logprobs float32 [1, V]
    train(context int32 [B, T], target int32 [B])  -> loss float32 []
    get_personal()                                  -> bias [V], adapter_down [E, r], adapter_up [r, V]
    set_personal(bias, adapter_down, adapter_up)    -> the same three, as stored

The federated backbone (embedding, LSTM, projection, tied output) is frozen
into constants (export quantizes it, dynamic-range, by default). On top sits a small
personal layer, the only thing `train` changes (an Adam step written in
plain TF ops, so it converts to builtins):

    h = projection(LSTM(embedding(context)))[:, -1]                    # [B, E]
    logits = h @ embedding^T + output_bias                             # federated model
           + bias + (h @ adapter_down) @ adapter_up                    # personal layer

`bias` and `adapter_up` start at zero, so an exported model predicts
exactly what the federated model predicts until the user opts into
learning. `train` takes a fixed batch B (with Keras's fused LSTM a
dynamic batch pulled in TensorList ops that only Flex runs, see docs/DESIGN.md;
a fixed B also keeps the phone's buffers fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from models.contract import PERSONAL_TENSORS
from models.metrics import target_mask


@dataclass(frozen=True)
class ExportConfig:
    """How the on-device model is built."""

    quantize: bool = True  # dynamic-range int8 weights for the frozen backbone
    train_batch_size: int = 8  # B of the `train` signature (fixed, see module docstring)
    adapter_rank: int = 4  # r of the personal low-rank output adapter
    learning_rate: float = 0.02  # Adam step size of the personal layer
    seed: int = 0  # initial `adapter_down` (its effect is zero until `adapter_up` moves)

    def __post_init__(self):
        if self.train_batch_size < 1 or self.adapter_rank < 1:
            raise ValueError("train_batch_size and adapter_rank must be positive, got "
                             f"{self.train_batch_size} and {self.adapter_rank}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def _stateless_lstm(lstm: tf.keras.layers.LSTM) -> tf.keras.layers.LSTM:
    """The same LSTM, unrolled over T steps and returning only the last output.

    Keras's LSTM converts to TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM,
    whose state tensors are interpreter variables: each call would start
    from the previous call's final state, so the same context gave
    different log-probs. Unrolled, the LSTM is plain builtin ops
    (FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD) and every call starts
    from zeros, as in training.
    """
    config = {**lstm.get_config(), "unroll": True, "return_sequences": False, "stateful": False,
              "name": f"{lstm.name}_unrolled",
              # The trained weights replace these right away.
              "kernel_initializer": "zeros", "recurrent_initializer": "zeros"}
    unrolled = tf.keras.layers.LSTM.from_config(config)
    unrolled.build(lstm.input_shape)
    unrolled.set_weights(lstm.get_weights())
    return unrolled


class OnDeviceModel(tf.Module):
    """The frozen federated model plus a trainable personal layer, as `tf.function`s."""

    ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-7

    def __init__(self, model: tf.keras.Model, config: ExportConfig):
        super().__init__(name="fedkb_on_device")
        try:
            self.embedding = model.get_layer("embedding")
            self.lstm = _stateless_lstm(model.get_layer("lstm"))
            self.projection = model.get_layer("projection")
            self.output_bias = model.get_layer("output").bias
        except ValueError as e:
            raise ValueError("export needs a models.next_word.build_model model (layers embedding, "
                             f"lstm, projection, output): {e}") from None
        self.vocab_size, self.embedding_dim = self.embedding.embeddings.shape
        self.context_len = model.input_shape[1]
        self.train_batch_size = config.train_batch_size
        self.learning_rate = config.learning_rate
        rank = config.adapter_rank
        rng = np.random.default_rng(config.seed)
        # LoRA-style: a random down-projection, a zero up-projection.
        down = rng.normal(0.0, 1.0 / math.sqrt(self.embedding_dim), (self.embedding_dim, rank))
        self.personal = {
            "bias": tf.Variable(tf.zeros([self.vocab_size]), name="personal_bias"),
            "adapter_down": tf.Variable(down.astype(np.float32), name="personal_adapter_down"),
            "adapter_up": tf.Variable(tf.zeros([rank, self.vocab_size]), name="personal_adapter_up"),
        }
        assert tuple(self.personal) == PERSONAL_TENSORS
        self.adam_m = {k: tf.Variable(tf.zeros_like(v), name=f"adam_m_{k}") for k, v in self.personal.items()}
        self.adam_v = {k: tf.Variable(tf.zeros_like(v), name=f"adam_v_{k}") for k, v in self.personal.items()}
        self.adam_step = tf.Variable(0.0, name="adam_step")

        T, B, V, E = self.context_len, self.train_batch_size, self.vocab_size, self.embedding_dim
        self.suggest = tf.function(
            self._suggest, input_signature=[tf.TensorSpec([1, T], tf.int32, name="context")])
        self.train = tf.function(self._train, input_signature=[
            tf.TensorSpec([B, T], tf.int32, name="context"), tf.TensorSpec([B], tf.int32, name="target")])
        self.get_personal = tf.function(self._get_personal, input_signature=[])
        self.set_personal = tf.function(self._set_personal, input_signature=[
            tf.TensorSpec([V], tf.float32, name="bias"),
            tf.TensorSpec([E, rank], tf.float32, name="adapter_down"),
            tf.TensorSpec([rank, V], tf.float32, name="adapter_up")])

    def _features(self, context):  # [B, T] -> [B, E], the last position's projection
        x = self.embedding(context)  # [B, T, E]
        x = self.lstm(x)  # [B, U], the last step
        return self.projection(x)  # [B, E]

    def _logits(self, h):  # [B, E] -> [B, V]
        federated = tf.matmul(h, self.embedding.embeddings, transpose_b=True) + self.output_bias
        p = self.personal
        return federated + p["bias"] + tf.matmul(tf.matmul(h, p["adapter_down"]), p["adapter_up"])

    def _suggest(self, context):
        return {"logprobs": tf.nn.log_softmax(self._logits(self._features(context)))}

    def _train(self, context, target):
        h = tf.stop_gradient(self._features(context))  # the backbone stays frozen
        # Rows whose target is ignored (<pad>, <bos>) count for nothing, as in training.
        mask = target_mask(target)  # [B], training's own mask (NOT_EQUAL, CAST, MUL: builtins)
        variables = list(self.personal.values())
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            logprobs = tf.nn.log_softmax(self._logits(h))  # [B, V]
            # one_hot rather than a sparse cross-entropy op: it stays a builtin.
            nll = -tf.reduce_sum(tf.one_hot(target, self.vocab_size) * logprobs, axis=-1)  # [B]
            loss = tf.reduce_sum(nll * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        grads = tape.gradient(loss, variables)
        self._adam_step(dict(zip(self.personal, grads)))
        return {"loss": loss}

    def _adam_step(self, grads: dict):
        b1, b2 = self.ADAM_BETA1, self.ADAM_BETA2
        step = self.adam_step.assign_add(1.0)
        lr = self.learning_rate * tf.sqrt(1.0 - tf.pow(b2, step)) / (1.0 - tf.pow(b1, step))
        for name, grad in grads.items():
            m = self.adam_m[name].assign(b1 * self.adam_m[name] + (1.0 - b1) * grad)
            v = self.adam_v[name].assign(b2 * self.adam_v[name] + (1.0 - b2) * tf.square(grad))
            self.personal[name].assign_sub(lr * m / (tf.sqrt(v) + self.ADAM_EPSILON))

    def _get_personal(self):
        return {name: tf.identity(var) for name, var in self.personal.items()}

    def _set_personal(self, bias, adapter_down, adapter_up):
        """Writes the personal layer and restarts the optimizer (its moments belong to old weights)."""
        self.adam_step.assign(0.0)
        for name in self.personal:
            self.adam_m[name].assign(tf.zeros_like(self.adam_m[name]))
            self.adam_v[name].assign(tf.zeros_like(self.adam_v[name]))
        values = {"bias": bias, "adapter_down": adapter_down, "adapter_up": adapter_up}
        return {name: self.personal[name].assign(value) for name, value in values.items()}
