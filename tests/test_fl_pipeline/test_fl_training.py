"""Federated training end to end with real TFF processes, on a tiny model."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import psutil
import pytest

from fl_helpers import FAST_TRAIN_FLAGS, fedkb


def workers_tagged(tag: str) -> list[psutil.Process]:
    """Live TFF workers started by a trainer run with FEDKB_TEST_TAG=tag (they inherit its
    environment); other tests' workers, running alongside under xdist, do not count."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if ("worker_binary" in " ".join(process.info["cmdline"] or [])
                    and process.info["status"] != psutil.STATUS_ZOMBIE
                    and process.environ().get("FEDKB_TEST_TAG") == tag):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def rounds_in(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["round"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    tag = str(run_dir)  # the whole path: "run0" alone is also another suite's tag on this machine
    out = fedkb("train", "--data", data_dir, "--out", run_dir, "--rounds", "6", *FAST_TRAIN_FLAGS,
                env={"FEDKB_TEST_TAG": tag})
    return run_dir, out, tag


def test_training_writes_a_complete_run_directory(trained_run):
    run_dir, out, _ = trained_run
    for name in ("config.json", "vocab.json", "metrics.csv", "eval_metrics.csv",
                 "final_model.weights.h5", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert (run_dir / "checkpoints" / "program_state_6").is_dir()
    assert rounds_in(run_dir / "metrics.csv") == [1, 2, 3, 4, 5, 6]
    assert rounds_in(run_dir / "eval_metrics.csv") == [2, 4, 6]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 6 and summary["clients_per_round"] == 4
    assert 4 <= summary["clients_seen"] <= summary["training_clients"]
    assert summary["examples"] > 0 and summary["dp"] is None
    assert summary["diverged_rounds"] == [] and summary["diverged_round_count"] == 0
    # measured in every round: the float32 update and its weight up, the model down
    assert summary["upload_bytes_per_client_per_round"] == 4 * summary["model_parameters"] + 4
    assert summary["communication"]["download"]["bytes_per_client_per_round"] == 4 * summary["model_parameters"]
    assert summary["communication"]["upload"]["client_rounds"] == 6 * 4
    heldout = summary["final_metrics"]["heldout"]
    assert 0 <= heldout["top1_accuracy"] <= heldout["top3_accuracy"] <= 1
    assert "federated training" in out.stderr  # the progress bar
    assert "held-out" in out.stdout and str(run_dir) in out.stdout


def test_federated_averaging_lowers_held_out_loss(trained_run):
    run_dir, _, _ = trained_run
    with open(run_dir / "eval_metrics.csv", newline="") as f:
        losses = [float(row["model_metrics/token_loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < losses[0] - 0.05


def test_no_tff_worker_survives_a_training_run(trained_run):
    _, _, tag = trained_run
    assert workers_tagged(tag) == []


def test_the_worker_check_sees_a_live_worker_with_its_tag_and_only_that(tmp_path, monkeypatch):
    """The positive control of the test above: a worker started as the trainer starts it, with
    the tag in its environment, is found while it lives, and a worker of another tag is not."""
    import portpicker

    from fl_pipeline.training.runtime import start_worker, stop_worker

    tag = str(tmp_path)
    monkeypatch.setenv("FEDKB_TEST_TAG", tag)
    worker = start_worker(portpicker.pick_unused_port())
    try:
        assert [process.pid for process in workers_tagged(tag)] == [worker.pid]
        assert workers_tagged(tag + "-another-run") == []
    finally:
        stop_worker(worker)
    assert workers_tagged(tag) == []


def test_eval_compares_five_models_on_the_same_held_out_texts(trained_run):
    run_dir, _, _ = trained_run
    out = fedkb("eval", run_dir, "--keyboard-messages", "3", "--personalize",
                "--personal-min-past", "1")
    report = json.loads((run_dir / "eval.json").read_text())
    assert list(report["models"]) == ["federated", "centralized", "local-only", "n-gram", "bigram"]
    tokens = {row["tokens"] for row in report["models"].values()}
    assert len(tokens) == 1 and tokens.pop() > 0  # same positions scored for every model
    keyboard = report["keyboard"]
    assert keyboard["users"] == keyboard["heldout_users_with_future"] > 0
    assert 0 < keyboard["messages"] <= 3 * keyboard["users"]
    typed = {(row["keyboard"]["counts"]["words"], row["keyboard"]["counts"]["characters"])
             for row in report["models"].values()}
    assert len(typed) == 1 and typed.pop()[0] > 0  # the same typist and messages for every model
    for name, row in report["models"].items():
        assert name in out.stdout
        for figures in (row["keyboard"]["pooled"], row["keyboard"]["user_mean"]):
            assert set(figures) == {"next_top1", "next_top3", "complete1_top3",
                                    "complete2_top3", "ksr"}
            assert 0 <= figures["next_top1"] <= figures["next_top3"] <= 1
            assert figures["ksr"] < 1
    assert report["models"]["federated"]["keyboard"]["suggester"].startswith("model.tflite")
    assert "KSR" in out.stdout
    # Personalized on the device: each user's few past texts are fewer than the never-worse
    # check holds back, so the app keeps the shared model and nothing may change.
    personal = report["personalization"]
    assert personal["users"] > 0 and personal["future_messages"] > 0
    for figure in ("next_top3", "ksr"):
        row = personal["figures"][figure]
        assert row["after"] == row["before"] is not None
        assert row["gain"] in (0, None) and row["share_worse"] == 0
    assert (run_dir / personal["plot"]).stat().st_size > 0
    assert "personalization:" in out.stdout


@pytest.mark.parametrize("option, check", [
    (["--secure-agg"], lambda s: s["secure_aggregation"]),
    # an LSTM wide enough for a tensor above the 20,000 values TFF quantizes
    (["--compress-tff8", "--lstm-units", "80"], lambda s: s["compression"]),
    (["--compress", "--lstm-units", "80"], lambda s: s["compression"]),
])
def test_privacy_and_communication_options_train_and_report(data_dir, tmp_path, option, check):
    fedkb("train", "--data", data_dir, "--out", tmp_path / "run", "--rounds", "2",
          *FAST_TRAIN_FLAGS, *option)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert check(summary)
    assert rounds_in(tmp_path / "run" / "metrics.csv") == [1, 2]
    if "--compress" in option or "--compress-tff8" in option:
        expected = encoded_update_bytes(tmp_path / "run", rotate="--compress" in option)
        upload = summary["communication"]["upload"]
        assert upload["bytes_per_client_per_round"] == upload["max_bytes_per_client_per_round"] == expected
        assert expected < 4 * summary["model_parameters"]


def encoded_update_bytes(run_dir, rotate: bool) -> int:
    """What one client's update of this run's model should take, computed here independently:
    each tensor encoded with tensorflow_model_optimization's encoders as TFF would (8-bit
    uniform quantization above 20,000 values for --compress-tff8; for --compress, a quarter
    of the vocabulary's rows and 2-bit Hadamard quantization), plus the float32 weight."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from models.next_word import ModelConfig, build_model

    config = json.loads((run_dir / "config.json").read_text())
    model_config = ModelConfig(**config["model"])
    total = 4
    for weight in build_model(model_config).trainable_weights:
        shape = weight.shape.as_list()
        if rotate and shape[0] == model_config.vocab_size:
            shape[0] = round(model_config.vocab_size / 4)
        spec = tf.TensorSpec(shape, tf.float32)
        if spec.shape.num_elements() <= 20_000:
            total += 4 * spec.shape.num_elements()
            continue
        encoder = te.encoders.as_gather_encoder(
            te.encoders.hadamard_quantization(2) if rotate else te.encoders.uniform_quantization(8),
            spec)
        params, _, _ = encoder.get_params(encoder.initial_state())
        encoded, _ = encoder.encode(tf.random.normal(shape), params)
        total += sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(encoded))
        # by hand: min and max, then the values bitpacked 28 bits to an int32 word
        padded = 2 ** math.ceil(math.log2(spec.shape.num_elements())) if rotate else spec.shape.num_elements()
        assert sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(encoded)) == (
            8 + 4 * math.ceil(padded * (2 if rotate else 8) / 28))
    return total


def test_compression_turned_off_trains_as_the_plain_run(trained_run, data_dir, tmp_path):
    """--compress with float32 values and every row: the same rounds as the plain run."""
    import h5py
    import numpy as np

    run_dir, _, _ = trained_run
    fedkb("train", "--data", data_dir, "--out", tmp_path / "off", "--rounds", "6",
          *FAST_TRAIN_FLAGS, "--compress", "--compress-bits", "0", "--compress-rows", "1")
    plain = json.loads((run_dir / "summary.json").read_text())
    off = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert off["communication"] == plain["communication"]

    def weights(path):
        with h5py.File(path) as f:
            found = []
            f.visititems(lambda name, obj: found.append(np.array(obj)) if hasattr(obj, "shape") else None)
            return found

    for a, b in zip(weights(run_dir / "final_model.weights.h5"),
                    weights(tmp_path / "off" / "final_model.weights.h5"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for name in ("token_loss", "top3_accuracy"):
        assert off["final_metrics"]["heldout"][name] == pytest.approx(
            plain["final_metrics"]["heldout"][name], abs=1e-4)


def test_the_worker_runs_on_jemalloc_when_it_is_installed():
    """Under glibc's malloc the worker's memory grew with the rounds; on jemalloc it stayed
    flat (`fedkb bench --full` measures it)."""
    import ctypes.util

    import portpicker

    from fl_pipeline.training.runtime import remote_context, start_worker, stop_worker

    if not ctypes.util.find_library("jemalloc"):
        pytest.skip("libjemalloc2 is not installed (`.ci/run` installs it)")
    port = portpicker.pick_unused_port()
    worker = start_worker(port)
    try:
        remote_context(f"localhost:{port}")  # it serves
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
    finally:
        stop_worker(worker)
    assert "libjemalloc" in maps


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/nonexistent/data"], "/nonexistent/data"),
    (["train", "--dp-noise-multiplier", "0.1", "--secure-agg"], "secure"),
    (["train", "--dp-noise-multiplier", "2", "--clients-per-round", "5"], "21 clients per round"),
    (["train", "--resume", "/nonexistent/run"], "/nonexistent/run"),
    (["train", "--workers", "localhost:8000,localhost:8000"], "'localhost:8000' is not a distinct"),
    (["train", "--workers", "localhost"], "'localhost' is not a distinct host:port"),
    (["train", "--worker-timeout", "0"], "--worker-timeout must be positive"),
    (["eval", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_training_input_is_one_line_and_exit_code_2(args, message, tmp_path):
    out = fedkb(*args, check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_training_into_an_existing_run_is_refused(trained_run, data_dir):
    run_dir, _, _ = trained_run
    out = fedkb("train", "--data", data_dir, "--out", run_dir, check=False)
    assert out.returncode == 2 and "--resume" in out.stderr
