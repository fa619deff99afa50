"""Training under the faults of real fleets and machines, end to end with real TFF.

One run with client failures (P = 0.3, over-selection 1.25) is the reference:
the faults it logs and counts, a skipped round that changes nothing, and
resumes from damaged checkpoints, a read-only run directory and a full disk
that must all end with the reference's final weights or a clear error.
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_helpers import FAST_TRAIN_FLAGS, fault_env, fedkb

ROUNDS = 8
FAULT_FLAGS = ["--dropout", "0.3", "--over-select", "1.25", "--seed", "0"]
# Every round is a checkpoint (the newest three are kept), so rounds 6-8 can be compared.
FLAGS = ["--rounds", str(ROUNDS), *FAST_TRAIN_FLAGS, *FAULT_FLAGS, "--checkpoint-every", "1"]


def replayed_plans(data_dir: Path):
    from datasets.store import ClientStore
    from fl_pipeline.training.participation import plan_rounds

    ids = ClientStore(data_dir).client_ids("train")
    return plan_rounds(ids, seed=0, rounds=ROUNDS, clients_per_round=4, dropout=0.3, over_select=1.25)


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def final_weights(run_dir: Path) -> list[np.ndarray]:
    import h5py

    arrays = []
    with h5py.File(run_dir / "final_model.weights.h5") as f:
        f.visititems(lambda name, item: arrays.append(item[()]) if hasattr(item, "shape") else None)
    return arrays


def assert_same_final_weights(a: Path, b: Path) -> None:
    for x, y in zip(final_weights(a), final_weights(b), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def state_floats(checkpoint: Path) -> list[np.ndarray]:
    """The float arrays of a saved program state: model, optimizer and aggregator state."""
    import tensorflow as tf

    values = tf.nest.flatten(tf.saved_model.load(str(checkpoint))())
    return [np.asarray(v) for v in values if v is not None and v.dtype.is_floating]


def file_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("fedkb train: error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


def interrupted_copy(run_dir: Path, to: Path, *, after_round: int) -> Path:
    """The run directory as a process killed after saving round `after_round` leaves it."""
    shutil.copytree(run_dir, to)
    for name in ("summary.json", "final_model.weights.h5"):
        (to / name).unlink()
    for checkpoint in (to / "checkpoints").glob("program_state_*"):
        if int(checkpoint.name.rsplit("_", 1)[1]) > after_round:
            shutil.rmtree(checkpoint)
    return to


@pytest.fixture(scope="module")
def faulty_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("faulty") / "run"
    out = fedkb("train", "--data", data_dir, "--out", run_dir, *FLAGS)
    return run_dir, out


def test_failed_clients_are_logged_counted_and_a_round_without_enough_reports_is_skipped(
        faulty_run, data_dir):
    run_dir, out = faulty_run
    plans = replayed_plans(data_dir)
    skipped = [p.round_num for p in plans if p.skipped]
    assert skipped == [8] and sum(len(p.late) for p in plans) > 0  # what this seed gives

    rows = metrics_rows(run_dir)
    assert [int(r["round"]) for r in rows] == list(range(1, ROUNDS + 1))
    for row, plan in zip(rows, plans):
        counts = {k: int(row[f"participation/{k}"]) for k in plan.counts()}
        assert counts == plan.counts()
        trained = int(row["model_metrics/num_examples"])
        assert (trained == 0) == plan.skipped

    participation = json.loads((run_dir / "summary.json").read_text())["participation"]
    assert participation["skipped_rounds"] == [8]
    assert participation["failed_clients"] == sum(len(p.failed) for p in plans) > 0
    assert participation["late_reports_discarded"] == sum(len(p.late) for p in plans)
    assert participation["invited_per_round"] == 5 and participation["min_reports"] == 2
    assert "round 8 skipped" in out.stderr
    assert "1 of 8 rounds skipped" in out.stdout


def test_a_skipped_round_leaves_the_server_state_unchanged(faulty_run):
    run_dir, _ = faulty_run
    checkpoints = run_dir / "checkpoints"
    before_skip, after_skip = state_floats(checkpoints / "program_state_7"), state_floats(
        checkpoints / "program_state_8")
    for a, b in zip(before_skip, after_skip, strict=True):
        np.testing.assert_array_equal(a, b)
    trained = state_floats(checkpoints / "program_state_6")  # round 7 did train
    assert any(not np.array_equal(a, b) for a, b in zip(trained, before_skip))


def test_resume_passes_over_a_half_written_and_a_damaged_checkpoint_and_ends_like_the_run(
        faulty_run, tmp_path):
    run_dir, _ = faulty_run
    resumed = interrupted_copy(run_dir, tmp_path / "run", after_round=ROUNDS)
    checkpoints = resumed / "checkpoints"
    # Round 8: killed while writing it (no COMPLETE marker, a file cut short).
    (checkpoints / "program_state_8" / "COMPLETE").unlink()
    data = checkpoints / "program_state_8" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    # Round 7: marked complete, then its data was cut short (power loss, a bad copy).
    data = checkpoints / "program_state_7" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])

    out = fedkb("train", "--resume", resumed)
    assert "program_state_7 is damaged" in out.stderr
    assert [int(r["round"]) for r in metrics_rows(resumed)] == list(range(1, ROUNDS + 1))
    assert_same_final_weights(run_dir, resumed)
    assert json.loads((resumed / "summary.json").read_text())["participation"]["skipped_rounds"] == [8]


def test_resume_without_any_usable_checkpoint_is_a_clean_error(faulty_run, tmp_path):
    run_dir, _ = faulty_run
    resumed = interrupted_copy(run_dir, tmp_path / "run", after_round=ROUNDS - 1)
    for marker in (resumed / "checkpoints").glob("program_state_*/COMPLETE"):
        marker.write_text("{not json")
    error = one_line_error(fedkb("train", "--resume", resumed, check=False))
    assert "no usable checkpoint" in error and "program_state_6" in error


def _without_dac_override() -> None:
    """preexec_fn: root, but file permissions apply (drops CAP_DAC_OVERRIDE/READ_SEARCH)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop CAP_DAC_OVERRIDE")


def test_a_read_only_run_directory_is_a_clear_error_and_the_checkpoints_stay(faulty_run, tmp_path):
    as_root = os.geteuid() == 0
    if as_root:
        try:
            subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_without_dac_override, check=True)
        except (subprocess.SubprocessError, OSError):
            pytest.skip("root here cannot drop CAP_DAC_OVERRIDE, so permissions would not apply")
    run_dir, _ = faulty_run
    resumed = interrupted_copy(run_dir, tmp_path / "run", after_round=6)
    before = file_hashes(resumed / "checkpoints")
    modes = {p: p.stat().st_mode for p in [resumed, *resumed.rglob("*")]}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        # As root, permissions only bind a process without CAP_DAC_OVERRIDE.
        out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "train", "--resume",
                              str(resumed)], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                             preexec_fn=_without_dac_override if as_root else None)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    error = one_line_error(out)
    assert str(resumed) in error and "Permission denied" in error
    assert "round 6" in error and "--resume" in error
    assert file_hashes(resumed / "checkpoints") == before


FILL_AND_RESUME = r"""
set -e
mount -t tmpfs -o size=6m fedkb-full "$MNT"
cp -a "$RUN" "$MNT/run"
# Fill the disk but for 48 kB: enough to start and train a round, not to save its checkpoint.
dd if=/dev/zero of="$MNT/reserve" bs=4k count=12 2>/dev/null
dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null || true
rm "$MNT/reserve"
set +e
"$PYTHON" -m fl_pipeline.cli train --resume "$MNT/run" >"$OUT/stdout" 2>"$OUT/stderr"
echo $? >"$OUT/rc"
set -e
rm "$MNT/filler"
cp -a "$MNT/run" "$OUT/run"
"""


@pytest.fixture(scope="module")
def full_disk_attempt(faulty_run, tmp_path_factory):
    """Resumes an interrupted copy of the run on a small tmpfs filled to the last byte.

    Returns (the resume's exit code/stdout/stderr, the run directory as the
    failed resume left it, copied out, and its checkpoint hashes before)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a private mount namespace for a small tmpfs (unshare --mount); "
                    "this machine does not allow it")
    run_dir, _ = faulty_run
    tmp_path = tmp_path_factory.mktemp("full-disk")
    resumed = interrupted_copy(run_dir, tmp_path / "run", after_round=6)
    before = file_hashes(resumed / "checkpoints")
    mount_point, out_dir = tmp_path / "mnt", tmp_path / "out"
    mount_point.mkdir()
    out_dir.mkdir()
    # The mount lives in a private namespace: it vanishes with the script, whatever happens.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MNT": str(mount_point), "RUN": str(resumed),
           "OUT": str(out_dir), "PYTHON": sys.executable}
    script = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                             FILL_AND_RESUME], env=env, capture_output=True, text=True, timeout=600)
    assert script.returncode == 0, script.stderr
    out = subprocess.CompletedProcess([], int((out_dir / "rc").read_text()),
                                      (out_dir / "stdout").read_text(), (out_dir / "stderr").read_text())
    return out, out_dir / "run", before


def test_a_full_disk_stops_training_with_a_clear_error_and_keeps_the_last_checkpoint(
        full_disk_attempt):
    out, full_run, before = full_disk_attempt
    error = one_line_error(out)
    assert "No space left on device" in error and "round 6" in error and "--resume" in error
    after = file_hashes(full_run / "checkpoints")
    kept = [name for name in before if name.startswith("program_state_6/")]
    assert kept and all(after.get(name) == before[name] for name in kept)
    assert not (full_run / "summary.json").exists()


@pytest.mark.full
def test_after_a_full_disk_the_run_finishes_where_it_would_have(faulty_run, full_disk_attempt):
    run_dir, _ = faulty_run
    _, full_run, _ = full_disk_attempt
    fedkb("train", "--resume", full_run)
    assert_same_final_weights(run_dir, full_run)


def train_in_background(data_dir: Path, run_dir: Path, *extra: str,
                        until_round: int = 2) -> subprocess.Popen:
    """`fedkb train` in a child process, returned stopped (SIGSTOP) right after
    its checkpoint of round `until_round` is complete, before it writes anything
    else: the caller injects a fault, then sends SIGCONT. The process stops
    itself at that event (`fault_injection`), so a machine's speed cannot
    move the fault to another round."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           # The full path: checkpoints/eval_manager/program_state_N/COMPLETE ends the same way.
           **fault_env(run_dir, stop_after=run_dir / "checkpoints" / f"program_state_{until_round}"
                       / "COMPLETE")}
    process = subprocess.Popen([sys.executable, "-m", "fl_pipeline.cli", "train", "--data",
                                str(data_dir), "--out", str(run_dir), *FLAGS, *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        process.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(f"training ended ({process.returncode}) before round {until_round} "
                             f"was saved: {process.communicate()[1][-3000:]}")
    assert (run_dir / "checkpoints" / f"program_state_{until_round}" / "COMPLETE").exists()
    return process


def resume_stopped(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGCONT)


def outcome(process: subprocess.Popen, fault: str) -> subprocess.CompletedProcess:
    """How the training in `process` ended after `fault`; a hang fails the test."""
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"training hung after {fault}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def crashed_worker(data_dir, tmp_path_factory):
    """A run whose TFF worker segfaults (SIGSEGV, as one did on this machine) after round 2."""
    import psutil

    run_dir = tmp_path_factory.mktemp("crash") / "run"
    process = train_in_background(data_dir, run_dir)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "worker_binary" in " ".join(p.cmdline())]
    assert len(workers) == 1
    workers[0].send_signal(signal.SIGSEGV)  # dead at once; the stopped trainer reaps it later
    resume_stopped(process)
    return outcome(process, "its TFF worker crashed"), run_dir


def test_a_crashed_worker_stops_training_with_a_clear_error(crashed_worker):
    out, run_dir = crashed_worker
    error = one_line_error(out)
    assert "TFF worker" in error and "killed by SIGSEGV" in error
    assert f"fedkb train --resume {run_dir}" in error
    assert not (run_dir / "summary.json").exists()


@pytest.mark.full
def test_after_a_worker_crash_the_run_resumes_to_the_same_model(faulty_run, crashed_worker):
    run_dir, _ = faulty_run
    _, crashed = crashed_worker
    fedkb("train", "--resume", crashed)
    assert_same_final_weights(run_dir, crashed)


def test_a_lost_remote_worker_stops_training_and_the_run_resumes_once_it_is_back(
        faulty_run, data_dir, tmp_path):
    """Two `fedkb worker`s on loopback; one machine goes away (SIGKILL) after round 2.
    Resumed on the workers, the run ends as the same run on local execution did."""
    import portpicker

    from fl_pipeline.training.runtime import start_worker, stop_worker

    ports = [portpicker.pick_unused_port() for _ in range(2)]
    workers = [start_worker(port) for port in ports]
    run_dir = tmp_path / "run"
    try:
        process = train_in_background(data_dir, run_dir, "--worker-timeout", "2", "--workers",
                                      ",".join(f"localhost:{port}" for port in ports))
        workers[1].kill()
        workers[1].wait()
        resume_stopped(process)
        error = one_line_error(outcome(process, "a remote worker was lost"))
        assert f"TFF worker at localhost:{ports[1]} has been unreachable for 2 s" in error
        assert f"fedkb worker --port {ports[1]}" in error
        assert f"fedkb train --resume {run_dir}" in error
        assert not (run_dir / "summary.json").exists()

        workers[1] = start_worker(ports[1])
        fedkb("train", "--resume", run_dir)
    finally:
        for worker in workers:
            stop_worker(worker)
    assert [int(row["round"]) for row in metrics_rows(run_dir)] == list(range(1, ROUNDS + 1))
    local, remote = (json.loads((run / "summary.json").read_text()) for run in (faulty_run[0], run_dir))
    assert remote["examples"] == local["examples"]
    for name in ("token_loss", "top1_accuracy", "top3_accuracy"):  # sums in another order
        assert remote["final_metrics"]["heldout"][name] == pytest.approx(
            local["final_metrics"]["heldout"][name], abs=1e-4)


def test_with_dp_a_skipped_round_changes_nothing_although_tff_would_add_noise(data_dir):
    """DP's mean divides by the planned cohort, so TFF alone would apply a noise-only
    update for an empty round; `SkipBadRounds` keeps the whole state instead."""
    import asyncio

    import tensorflow_federated as tff

    from datasets.store import ClientStore
    from fl_pipeline.config import TrainConfig
    from fl_pipeline.training.runtime import federated_context
    from fl_pipeline.training.learning_process import SkipBadRounds, build_training_process
    from models.next_word import ModelConfig

    store = ClientStore(data_dir)
    model = ModelConfig(vocab_size=len(store.vocab), seq_len=store.seq_len, embedding_dim=8,
                        lstm_units=16)
    process = build_training_process(model, TrainConfig(clients_per_round=4, batch_size=8,
                                                        dp_noise_multiplier=0.3),
                                     store.client_data("train"))

    async def weights_after_an_empty_round(training):
        materialize = tff.program.materialize_value
        state = await materialize(training.initialize())
        state = (await materialize(training.next(state, store.client_ids("train")[:4]))).state
        before = (await materialize(training.get_model_weights(state))).trainable
        after_state = (await materialize(training.next(state, []))).state
        after = (await materialize(training.get_model_weights(after_state))).trainable
        return before, after

    with federated_context():
        plain_before, plain_after = asyncio.run(weights_after_an_empty_round(process))
        kept_before, kept_after = asyncio.run(weights_after_an_empty_round(
            SkipBadRounds(process, len(store.vocab), use_client_loss=False)))
    assert any(not np.array_equal(a, b) for a, b in zip(plain_before, plain_after))  # noise
    for a, b in zip(kept_before, kept_after, strict=True):
        np.testing.assert_array_equal(a, b)
