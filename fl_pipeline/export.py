"""Export a trained next-word model to a self-contained TFLite model directory.

The directory (`model.tflite`, `vocab.json`, `model_card.json`) is all a
phone needs: LiteRT's standard builtin kernels run it, no TensorFlow and no
Flex delegate. What runs inside `model.tflite` (its four signatures: suggest,
train, get_personal, set_personal, and the personal layer) is
`models/on_device.py`; what the app expects of the directory is
`models/contract.py`. This module converts, quantizes, writes and describes.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from datasets.errors import FedKBError
from datasets.vocab import IGNORED_TARGET_IDS, Vocabulary
from fl_pipeline.run_dir import FINAL_WEIGHTS, load_finished_run
from models.contract import (CARD_FILE, CARD_FORMAT, CARD_FORMAT_VERSION, MODEL_FILE,
                             PERSONAL_TENSORS, SIGNATURES, VOCAB_FILE, expected_signatures,
                             sha256_file_bytes)
from models.next_word import count_parameters
from models.on_device import ExportConfig, OnDeviceModel


class ExportError(FedKBError):
    """A run directory that cannot be exported (missing or inconsistent files)."""


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
