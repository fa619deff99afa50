"""Export a trained next-word model to a self-contained TFLite model directory.

The directory (`model.tflite`, `vocab.json`, `model_card.json`) is all a
phone needs: LiteRT's standard builtin kernels run it, no TensorFlow and no
Flex delegate. `model.tflite` has four signatures, the shape of TFLite's
on-device training example (and Flower's):

    suggest(context int32 [1, T])                  -> logprobs float32 [1, V]
    train(context int32 [B, T], target int32 [B])  -> loss float32 []
    get_personal()                                  -> bias [V], adapter_down [E, r], adapter_up [r, V]
    set_personal(bias, adapter_down, adapter_up)    -> the same three, as stored

The federated backbone (embedding, LSTM, projection, tied output) is frozen
into constants, dynamic-range quantized by default. On top sits a small
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

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from datasets.errors import FedKBError
from datasets.vocab import BOS_ID, IGNORED_TARGET_IDS, PAD_ID, Vocabulary
from fl_pipeline.run_dir import FINAL_WEIGHTS, load_finished_run
from models.contract import (CARD_FILE, CARD_FORMAT, CARD_FORMAT_VERSION, MODEL_FILE,
                             PERSONAL_TENSORS, SIGNATURES, VOCAB_FILE, expected_signatures,
                             sha256_file_bytes)
from models.next_word import count_parameters

class ExportError(FedKBError):
    """A run directory that cannot be exported (missing or inconsistent files)."""


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
        # Rows whose target is <pad> or <bos> count for nothing, as in training.
        mask = tf.cast((target != PAD_ID) & (target != BOS_ID), tf.float32)  # [B]
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


def convert(module: OnDeviceModel, *, quantize: bool) -> bytes:
    """The TFLite flatbuffer of `module` with the four signatures, builtin ops only."""
    signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURES}
    with tempfile.TemporaryDirectory(prefix="fedkb-export-") as saved_model_dir:
        tf.saved_model.save(module, saved_model_dir, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=list(SIGNATURES))
        # Builtins only: conversion fails rather than emitting a Flex op.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def fedkb_version() -> str:
    try:
        return importlib.metadata.version("fedkb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _describe_signatures(module: OnDeviceModel) -> dict:
    """The signature table of the model card (what a phone client calls)."""
    signatures = expected_signatures(
        context_len=module.context_len, train_batch_size=module.train_batch_size,
        vocab_size=module.vocab_size, embedding_dim=module.embedding_dim,
        adapter_rank=module.personal["adapter_up"].shape[0])
    return {name: {side: {tensor: [dtype, list(shape)] for tensor, (dtype, shape) in specs.items()}
                   for side, specs in sides.items()}
            for name, sides in signatures.items()}


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_model(model: tf.keras.Model, vocab: Vocabulary, out_dir: str | Path, *,
                 training: dict, heldout_metrics: dict | None = None,
                 config: ExportConfig = ExportConfig(), progress: bool = False) -> Path:
    """Writes the model directory for a Keras next-word model and returns its path.

    `model` is a `models.next_word.build_model` model with its weights;
    `training` says how it was trained (the card's "training" section,
    e.g. a run's summary.json); `heldout_metrics` are the run's held-out
    metrics, if any. The card is written last and carries the size and
    hash of `model.tflite`, so an interrupted export never passes for a
    complete one.
    """
    started = time.perf_counter()
    vocab_size = model.get_layer("embedding").input_dim
    if vocab_size != len(vocab):
        raise ExportError(f"the model predicts {vocab_size} tokens but the vocabulary has "
                          f"{len(vocab)}; export the model with the vocabulary it was trained on")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory; choose another --out")
    with tqdm(total=3, desc="export", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("building the on-device model")
        module = OnDeviceModel(model, config)
        bar.update()
        bar.set_postfix_str("converting to TFLite")
        flatbuffer = convert(module, quantize=config.quantize)
        bar.update()
        bar.set_postfix_str(f"writing {out_dir}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CARD_FILE).unlink(missing_ok=True)
        _write_atomically(out_dir / MODEL_FILE, flatbuffer)
        vocab.save(out_dir / VOCAB_FILE)
        bar.update()
    personal_parameters = sum(v.shape.num_elements() for v in module.personal.values())
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "fedkb_version": fedkb_version(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "architecture": "embedding -> LSTM -> projection -> output tied to the embedding",
            "vocab_size": module.vocab_size,
            "context_len": module.context_len,
            "embedding_dim": module.embedding_dim,
            "lstm_units": module.lstm.units,
            "parameters": count_parameters(model),
            "personal_parameters": personal_parameters,
        },
        "file": {
            "name": MODEL_FILE,
            "bytes": len(flatbuffer),
            "sha256": sha256_file_bytes(flatbuffer),
            "quantization": quantization_label(config.quantize),
            "ops": "TFLite builtins only (no Flex / select TF ops)",
        },
        "vocab": {"file": VOCAB_FILE, "size": len(vocab), "sha256": vocab.sha256},
        "signatures": _describe_signatures(module),
        "personal_layer": {
            "logits": "federated logits + bias + (h @ adapter_down) @ adapter_up",
            "tensors": list(PERSONAL_TENSORS),
            "adapter_rank": config.adapter_rank,
            "optimizer": "adam",
            "learning_rate": config.learning_rate,
            "train_batch_size": config.train_batch_size,
            "ignored_targets": list(IGNORED_TARGET_IDS),
        },
        "training": training,
        "heldout_metrics": heldout_metrics,
    }
    card["export_seconds"] = round(time.perf_counter() - started, 2)
    _write_atomically(out_dir / CARD_FILE,
                      (json.dumps(card, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return out_dir


def quantization_label(quantize: bool) -> str:
    return "dynamic-range int8 weights" if quantize else "none (float32)"


def training_card(config: dict, summary: dict) -> tuple[dict, dict | None]:
    """(card "training" section, held-out metrics) from a run's config and summary."""
    training = {key: value for key, value in summary.items() if key != "final_metrics"}
    if training.get("dp") is None:
        training["dp"] = "none"
    training["settings"] = config.get("train", {})
    heldout = (summary.get("final_metrics") or {}).get("heldout")
    return training, heldout


def run_training_card(run_dir: Path, run_config: dict, summary: dict) -> tuple[dict, dict | None]:
    """The card's "training" section for a run: its summary, settings and final weights' hash."""
    training, heldout = training_card(run_config, summary)
    training["final_weights_sha256"] = sha256_file_bytes((run_dir / FINAL_WEIGHTS).read_bytes())
    return training, heldout


def export_run(run_dir: str | Path, out_dir: str | Path, *, quantize: bool = True,
               config: ExportConfig | None = None, progress: bool = False) -> Path:
    """`fedkb export`: the model directory for a finished training run."""
    config = dataclasses.replace(config or ExportConfig(), quantize=quantize)
    model, vocab, run_config, summary = load_finished_run(run_dir)
    training, heldout = run_training_card(Path(run_dir), run_config, summary)
    return export_model(model, vocab, out_dir, training=training, heldout_metrics=heldout,
                        config=config, progress=progress)
