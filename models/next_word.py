"""The next-word language model shared by training, baselines and export.

Shaped like Gboard's production model (Hard et al., 2018): a word embedding,
one LSTM, a projection back to the embedding size, and an output layer tied
to the input embedding, so the 10k x 96 table is stored once. The default
has about 1.36M parameters.

    tokens [B, T] -> embedding [B, T, E] -> LSTM [B, T, U]
                  -> projection [B, T, E] -> logits = p @ embedding^T + bias [B, T, V]
"""

from __future__ import annotations

import os

import tensorflow as tf

from models.config import ModelConfig


class TiedOutput(tf.keras.layers.Layer):
    """Logits from the transposed input embedding plus a per-word bias."""

    def __init__(self, embedding: tf.keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        vocab_size = self.embedding.input_dim
        self.bias = self.add_weight(name="bias", shape=[vocab_size], initializer="zeros")

    def call(self, projected):  # [B, T, E] -> [B, T, V]
        return tf.matmul(projected, self.embedding.embeddings, transpose_b=True) + self.bias


def build_model(config: ModelConfig, seed: int | None = None,
                weights_file: str | os.PathLike | None = None) -> tf.keras.Model:
    """A fresh model; the same seed gives the same initial weights. With `weights_file`
    (Keras `.weights.h5`: a run's final or initial model), its weights are loaded over them."""
    init = lambda offset: tf.keras.initializers.GlorotUniform(  # noqa: E731
        seed=None if seed is None else seed + offset
    )
    tokens = tf.keras.Input(shape=[config.seq_len], dtype=tf.int32, name="tokens")
    embedding = tf.keras.layers.Embedding(
        config.vocab_size,
        config.embedding_dim,
        embeddings_initializer=tf.keras.initializers.RandomUniform(
            -0.05, 0.05, seed=None if seed is None else seed
        ),
        name="embedding",
    )
    x = embedding(tokens)
    x = tf.keras.layers.LSTM(
        config.lstm_units,
        return_sequences=True,
        kernel_initializer=init(1),
        recurrent_initializer=tf.keras.initializers.Orthogonal(seed=None if seed is None else seed + 2),
        name="lstm",
    )(x)
    x = tf.keras.layers.Dense(config.embedding_dim, kernel_initializer=init(3), name="projection")(x)
    logits = TiedOutput(embedding, name="output")(x)
    model = tf.keras.Model(tokens, logits, name="next_word")
    if weights_file is not None:
        model.load_weights(str(weights_file))
    return model


def training_flops_per_token(config: ModelConfig) -> int:
    """Model FLOPs of training on one real token: the forward pass's multiply-adds (LSTM
    gates, projection, tied output layer) x 2, and x 3 for forward plus backward. The
    bench sets this against the machine's matmul peak (model FLOPs utilization)."""
    E, U, V = config.embedding_dim, config.lstm_units, config.vocab_size
    return 3 * 2 * (4 * U * (E + U) + U * E + E * V)


def count_parameters(model: tf.keras.Model) -> int:
    return int(sum(v.shape.num_elements() for v in model.weights))
