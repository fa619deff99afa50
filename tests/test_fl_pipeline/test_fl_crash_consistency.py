"""Crash consistency of the run directory: `kill -9` at any file write, then `--resume`,
ends exactly as the uninterrupted run (issue 12), and run directories of older FedKB
versions still resume. Kills are chosen by events (`fl_pipeline.training.fault_injection`), never
by the clock. Its own file so that pytest-xdist runs it beside test_fl_faults."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fl_helpers import fault_env, fedkb
from test_fl_faults import FLAGS, assert_same_final_weights, interrupted_copy, metrics_rows


def tensorboard_scalars(log_dir: Path) -> dict[tuple[str, int], list[float]]:
    """{(tag, step): every value written for it} over all event files under `log_dir`.
    A file cut short by a kill ends where its last whole record ends."""
    import tensorflow as tf

    values: dict[tuple[str, int], list[float]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    number = float(tf.make_ndarray(value.tensor))
                    values.setdefault((value.tag, event.step), []).append(number)
        except tf.errors.DataLossError:
            pass
    return values


def assert_rows_equal(resumed: list[dict[str, str]], whole: list[dict[str, str]]) -> None:
    assert [r["round"] for r in resumed] == [r["round"] for r in whole]
    for a, b in zip(resumed, whole):
        assert a.keys() == b.keys()
        for column in a:
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-5), (a["round"], column)


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory) -> Path:
    """The uninterrupted run (test_fl_faults' faulty run: dropouts, over-selection, and a
    round skipped for too few reports)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    fedkb("train", "--data", data_dir, "--out", run_dir, *FLAGS)
    return run_dir


# Nine trainer processes, each starting TensorFlow: 6-7 min on a 2-core CI machine beside
# another test file. The limit only catches a hang; pyproject's 900 s left 2.25x.
@pytest.mark.timeout(1800)
def test_a_run_killed_at_any_write_resumes_to_exactly_the_uninterrupted_run(
        reference_run, data_dir, tmp_path):
    """kill -9 at event-chosen points (`fault_injection`), one per process,
    resuming after each: every round's metrics exactly once and equal to the
    uninterrupted run's, every TensorBoard step present with one value, and
    the same final weights.

    A run killed while it is set up (before its first checkpoint) cannot be
    resumed and is started again with the same `train --out`. After that the
    reference run writes about 11 files per round; each kill below lands
    within a round or two of where its process resumed, so the run reaches
    its end only in the last process."""
    reference = reference_run
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    start = ["train", "--data", data_dir, "--out", run_dir, *FLAGS]
    resume = ["train", "--resume", run_dir]
    steps = [
        (start, "1:config"),                        # setting the run up: config.json not yet in place
        (start, f"{rng.randint(5, 14)}"),            # after config.json (event 4): round 1 or 2
        (resume, "1:COMPLETE.partial"),             # inside a checkpoint: state written, manifest not
        (resume, f"{rng.randint(1, 3)}:metrics.csv"),  # a metrics row (training or held-out)
        (resume, "2:COMPLETE"),                     # a manifest about to be renamed into place
        (resume, f"{rng.randint(1, 6)}"),            # whatever comes first after resuming
        (resume, "1:final_model.weights.h5"),       # the final weights about to be renamed into place
        (resume, "1:summary"),                      # training done, summary.json not yet written
    ]
    for args, kill_at in steps:
        out = fedkb(*args, check=False, env=fault_env(run_dir, kill_at=kill_at))
        assert out.returncode == -signal.SIGKILL, (kill_at, out.returncode, out.stderr[-3000:])
    fedkb(*resume)

    assert_rows_equal(metrics_rows(run_dir), metrics_rows(reference))
    for name in ("eval_metrics.csv",):
        with open(run_dir / name, newline="") as a, open(reference / name, newline="") as b:
            assert_rows_equal(list(csv.DictReader(a)), list(csv.DictReader(b)))
    for log in ("train", "heldout"):
        resumed = tensorboard_scalars(run_dir / "tensorboard" / log)
        whole = tensorboard_scalars(reference / "tensorboard" / log)
        assert resumed.keys() == whole.keys(), log  # no step missing, none extra
        for key, values in resumed.items():
            assert values == pytest.approx([whole[key][0]] * len(values), abs=1e-5), key
    assert_same_final_weights(reference, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["participation"]["skipped_rounds"] == [8]


OLD_RUN = r"""
import sys
from pathlib import Path
from fl_pipeline.config import TrainConfig
from fl_pipeline.training import run
run.train(Path(sys.argv[1]), Path(sys.argv[2]), TrainConfig(
    rounds=4, clients_per_round=4, batch_size=8, eval_every=2, checkpoint_every=1,
    client_lr=0.5, server_lr=0.05, clip_updates=False), dict(embedding_dim=8, lstm_units=16),
    show_progress=False)
"""


def test_a_run_directory_from_before_the_update_bound_still_resumes(data_dir, tmp_path):
    """Runs made before FedKB bounded client updates have no aggregator state in
    their checkpoints and no `clip_updates` in config.json: a resume trains them
    on as they were trained, and finishes where the uninterrupted run did."""
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-c", OLD_RUN, str(data_dir), str(whole)], check=True,
                   capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    config = json.loads((whole / "config.json").read_text())
    del config["train"]["clip_updates"]  # as 9d6c47d wrote it
    (whole / "config.json").write_text(json.dumps(config))
    resumed = interrupted_copy(whole, tmp_path / "resumed", after_round=2)

    fedkb("train", "--resume", resumed)
    assert [int(r["round"]) for r in metrics_rows(resumed)] == [1, 2, 3, 4]
    assert_same_final_weights(whole, resumed)
