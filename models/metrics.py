"""Loss and accuracy for next-word prediction, as in the Stack Overflow benchmark.

Positions whose target is ``<pad>`` or ``<bos>`` are ignored: nobody types
them. A position whose target is ``<oov>`` still counts but can never be
right: predicting "some unknown word" does not help a keyboard user.
Perplexity is exp(token-weighted mean loss), computed from `token_loss`
after aggregation because it does not average across clients.
"""

from __future__ import annotations

import tensorflow as tf

from datasets.vocab import IGNORED_TARGET_IDS, OOV_ID


def target_mask(y_true: tf.Tensor) -> tf.Tensor:
    """1.0 where the target counts, 0.0 at the ignored targets (``<pad>``, ``<bos>``)."""
    y_true = tf.cast(y_true, tf.int32)
    # tf.not_equal, not `!=`: TFF traces in graphs where `!=` compares objects.
    mask = tf.ones_like(y_true, tf.float32)
    for ignored in IGNORED_TARGET_IDS:
        mask *= tf.cast(tf.not_equal(y_true, ignored), tf.float32)
    return mask


class MaskedLoss(tf.keras.losses.Loss):
    """Cross-entropy averaged over the positions that count."""

    def __init__(self, name: str = "masked_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        # A scalar already: Keras's default reduction leaves it as it is.
        per_token = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        mask = target_mask(y_true)
        return tf.reduce_sum(per_token * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class TokenLoss(tf.keras.metrics.Mean):
    """Mean cross-entropy per counted token (exp of it is the perplexity)."""

    def __init__(self, name: str = "token_loss", dtype=tf.float32):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        per_token = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return super().update_state(per_token, sample_weight=target_mask(y_true))


class TopKAccuracy(tf.keras.metrics.Mean):
    """Share of counted positions whose target is among the k best logits."""

    def __init__(self, k: int = 1, name: str | None = None, dtype=tf.float32):
        super().__init__(name=name or f"top{k}_accuracy", dtype=dtype)
        self.k = k

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        top_k = tf.math.top_k(y_pred, k=self.k).indices  # [B, T, k]
        hit = tf.reduce_any(tf.equal(top_k, y_true[..., None]), axis=-1) & tf.not_equal(y_true, OOV_ID)
        return super().update_state(tf.cast(hit, tf.float32), sample_weight=target_mask(y_true))

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class TokenCount(tf.keras.metrics.Sum):
    """Number of counted target positions (the weight behind every mean)."""

    def __init__(self, name: str = "tokens", dtype=tf.float32):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(tf.reduce_sum(target_mask(y_true)))


def metric_builders() -> list:
    """Fresh metric objects (TFF wants constructors, not shared instances)."""
    return [
        lambda: TokenLoss(),
        lambda: TopKAccuracy(1),
        lambda: TopKAccuracy(3),
        lambda: TokenCount(),
    ]
