"""What a team would do instead of federated learning, measured the same way.

Every model is scored on the same held-out clients' `future` texts with the
same metrics (`models.metrics`): top-1/top-3 next-word accuracy ignoring
`<pad>`/`<bos>` targets, `<oov>` never right, and perplexity.

- federated: the run's final model.
- centralized: the same model trained on the pooled text of the training
  clients (all of it on one server: best case, no privacy), for the same
  number of example passes the federated run made.
- local-only: each held-out client trains a fresh model alone on its own
  `past` texts (private, but a phone sees little text).
- n-gram: an interpolated Kneser-Ney trigram on the pooled training text,
  the classic keyboard model.
- bigram: the simplest typist's keyboard, word-pair counts from the same
  text: after a word, the words that most often followed it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from datasets.vocab import IGNORED_TARGET_IDS, OOV_ID, PAD_ID
from fl_pipeline.training.client_data import to_model_batches
from models.metrics import TokenLoss, TopKAccuracy, target_mask
from models.next_word import ModelConfig, build_model
from models.train_step import train_step


@dataclass
class Score:
    """Token-weighted metrics of one model on the held-out clients' future texts."""

    top1_accuracy: float
    top3_accuracy: float
    token_loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.token_loss) if math.isfinite(self.token_loss) else float("inf")

    def to_json(self) -> dict:
        return {"top1_accuracy": self.top1_accuracy, "top3_accuracy": self.top3_accuracy,
                "token_loss": self.token_loss, "perplexity": self.perplexity, "tokens": self.tokens}


class Scorer:
    """Accumulates the metrics over batches (x [B, T], y [B, T], logits [B, T, V])."""

    def __init__(self):
        self.metrics = [TopKAccuracy(1), TopKAccuracy(3), TokenLoss()]
        self.tokens = 0.0

    def update(self, y, logits) -> None:
        for metric in self.metrics:
            metric.update_state(y, logits)
        self.tokens += float(tf.reduce_sum(target_mask(y)))

    def merge(self, other: "Scorer") -> None:
        for mine, theirs in zip(self.metrics, other.metrics):
            mine.merge_state([theirs])
        self.tokens += other.tokens

    def result(self) -> Score:
        top1, top3, loss = (float(m.result()) for m in self.metrics)
        return Score(top1, top3, loss, int(self.tokens))


def predictor(model: tf.keras.Model):
    """The model's forward pass as one traced function (x [B, T] -> logits)."""
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def score_keras(model: tf.keras.Model, batches: tf.data.Dataset, predict=None) -> Scorer:
    predict = predict or predictor(model)
    scorer = Scorer()
    for x, y in batches:
        scorer.update(y, predict(x))
    return scorer


def train_centralized(model_config: ModelConfig, pooled: tf.data.Dataset, *, examples: int,
                      batch_size: int, learning_rate: float = 2e-3, seed: int = 0,
                      show_progress: bool = True,
                      on_checkpoint: Callable[[int, tf.keras.Model], None] | None = None,
                      checkpoint_at: Sequence[int] = (),
                      initial_weights: list | None = None) -> tf.keras.Model:
    """The same model on the pooled text for `examples` example passes (Adam), from
    `initial_weights` (a warm start, e.g. the federated run's) or the seeded random init.

    `on_checkpoint(examples_seen, model)` runs after the step that reaches
    each of the example counts in `checkpoint_at` (counts past the last step
    are skipped), e.g. to score the model along the way for a learning curve.
    """
    model = _starting_model(model_config, seed, initial_weights)
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    steps = max(1, examples // batch_size)
    batches = to_model_batches(pooled.shuffle(10_000, seed=seed).repeat(), batch_size=batch_size)
    step = train_step(model, optimizer)
    pending = sorted(n for n in checkpoint_at if n > 0)
    for done, (x, y) in enumerate(tqdm(batches.take(steps), total=steps, desc="centralized",
                                       unit="step", disable=not show_progress, leave=False), 1):
        step(x, y)
        if on_checkpoint and pending and done * batch_size >= pending[0]:
            on_checkpoint(done * batch_size, model)
            pending = [n for n in pending if n > done * batch_size]
    return model


def _starting_model(model_config: ModelConfig, seed: int,
                    initial_weights: list | None) -> tf.keras.Model:
    """The model a baseline starts from: the warm start's weights, or the seeded random init
    (the federated run's own start either way)."""
    model = build_model(model_config, seed=seed)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    return model


def score_local_only(model_config: ModelConfig, past, future, client_ids: list[str], *,
                     batch_size: int, learning_rate: float, epochs: int = 5, seed: int = 0,
                     show_progress: bool = True,
                     on_client: Callable[[str, Callable], None] | None = None,
                     initial_weights: list | None = None) -> Score:
    """Each client trains a fresh copy of the model on its own past texts only (SGD),
    from `initial_weights` (the federated run's warm start) or the seeded random init.

    `on_client(client_id, predict)` runs after each client's training, with
    its model's forward pass (x [B, T] -> logits), e.g. for keyboard metrics.
    """
    model = _starting_model(model_config, seed, initial_weights)
    initial = model.get_weights()
    step = train_step(model, tf.keras.optimizers.SGD(learning_rate))  # SGD: no state to reset
    predict = predictor(model)
    past_ids = set(past.client_ids)
    total = Scorer()
    for client_id in tqdm(client_ids, desc="local-only", unit="client", disable=not show_progress,
                          leave=False):
        model.set_weights(initial)
        if client_id in past_ids:
            own = to_model_batches(past.create_tf_dataset_for_client(client_id),
                                   batch_size=batch_size, epochs=epochs,
                                   shuffle_seed=seed)
            for x, y in own:
                step(x, y)
        if on_client:
            on_client(client_id, predict)
        total.merge(score_keras(model, to_model_batches(
            future.create_tf_dataset_for_client(client_id), batch_size=64), predict))
    return total.result()


class KneserNeyTrigram:
    """Interpolated Kneser-Ney trigram over token ids (Chen & Goodman, 1998).

    Written here with numpy rather than taken from NLTK: the metrics need the
    whole next-word distribution at every position (top-3 over 10k words),
    which NLTK's per-word scoring makes hours long; here a position costs a
    few vector operations.
    """

    def __init__(self, vocab_size: int, discount: float = 0.75):
        self.vocab_size = vocab_size
        self.d = discount
        self.trigram = collections.defaultdict(collections.Counter)  # (u, v) -> {w: count}

    def fit(self, windows) -> "KneserNeyTrigram":
        """`windows`: iterable of int arrays (left-padded windows of token ids)."""
        for window in windows:
            ids = [int(i) for i in window]
            for u, v, w in zip(ids, ids[1:], ids[2:]):
                self.trigram[(u, v)][w] += 1
        self._finish()
        return self

    def _finish(self) -> None:
        V = self.vocab_size
        # N1+(. v w): distinct left contexts of each bigram, from the trigram table.
        left_contexts = collections.defaultdict(set)
        for (u, v), followers in self.trigram.items():
            for w in followers:
                left_contexts[(v, w)].add(u)
        bigram_kn = collections.defaultdict(dict)  # v -> {w: N1+(. v w)}
        for (v, w), lefts in left_contexts.items():
            bigram_kn[v][w] = len(lefts)
        # Unigram continuation: N1+(. w) over distinct bigram types (v, w).
        unigram = np.zeros(V)
        for (v, w) in left_contexts:
            unigram[w] += 1
        unigram += 1e-3  # every word keeps a sliver of probability
        self.p_unigram = unigram / unigram.sum()
        self.bigram = {v: (np.fromiter(f, int), np.fromiter(f.values(), float))
                       for v, f in bigram_kn.items()}
        self.trigram_arrays = {uv: (np.fromiter(f, int), np.fromiter(f.values(), float))
                               for uv, f in self.trigram.items()}

    def _interpolate(self, lower: np.ndarray, table) -> np.ndarray:
        if table is None:
            return lower
        words, counts = table
        total = counts.sum()
        p = lower * (self.d * len(words) / total)
        p[words] += np.maximum(counts - self.d, 0) / total
        return p

    def distribution(self, u: int, v: int) -> np.ndarray:
        """P(w | u, v) over the whole vocabulary."""
        p_bigram = self._interpolate(self.p_unigram, self.bigram.get(v))
        return self._interpolate(p_bigram, self.trigram_arrays.get((u, v)))

    def score(self, windows, show_progress: bool = True) -> Score:
        return score_distribution(self.distribution, windows, "n-gram", show_progress)


class WordPairBigram:
    """Word-pair counts: after token v, the tokens that most often followed it.

    P(w | v) = (c(v, w) + p(w)) / (c(v) + 1), p the unigram frequency: a
    Dirichlet-smoothed bigram (prior weight 1), so words rank by how often
    they followed v, ties (and unseen v) by how frequent they are, and the
    same token-level metrics apply. Counted on the same windows as the
    trigram (stride T with T+1 tokens: every pair of the text once).
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.pairs = collections.defaultdict(collections.Counter)  # v -> {w: count}

    def fit(self, windows) -> "WordPairBigram":
        unigram = np.zeros(self.vocab_size)
        for window in windows:
            ids = [int(i) for i in window]
            for v, w in zip(ids, ids[1:]):
                if w not in IGNORED_TARGET_IDS:
                    self.pairs[v][w] += 1
                    unigram[w] += 1
        self.p_unigram = (unigram + 1e-3) / (unigram + 1e-3).sum()
        self.rows = {v: (np.fromiter(f, int), np.fromiter(f.values(), float))
                     for v, f in self.pairs.items()}
        return self

    def distribution(self, u: int, v: int) -> np.ndarray:
        """P(w | v) over the whole vocabulary (u, the word before v, is ignored)."""
        p = self.p_unigram.copy()
        if v in self.rows:
            words, counts = self.rows[v]
            p[words] += counts
            p /= counts.sum() + 1
        return p

    def score(self, windows, show_progress: bool = True) -> Score:
        return score_distribution(self.distribution, windows, "bigram", show_progress)


def score_distribution(distribution: Callable[[int, int], np.ndarray], windows, name: str,
                       show_progress: bool = True) -> Score:
    """The metrics of `distribution(u, v) -> P(w | u, v)` at every counted target of `windows`."""
    hits1 = hits3 = 0
    loss = 0.0
    counted = 0
    for window in tqdm(windows, desc=name, unit="window", disable=not show_progress,
                       leave=False):
        ids = [int(i) for i in window]
        for position in range(1, len(ids)):
            target = ids[position]
            if target in IGNORED_TARGET_IDS:
                continue
            u = ids[position - 2] if position >= 2 else PAD_ID
            p = distribution(u, ids[position - 1])
            top3 = np.argpartition(-p, 3)[:3]
            top1 = int(np.argmax(p))
            counted += 1
            loss -= math.log(max(p[target], 1e-12))
            if target != OOV_ID:
                hits1 += top1 == target
                hits3 += target in top3
    counted = max(counted, 1)
    return Score(hits1 / counted, hits3 / counted, loss / counted, counted)
