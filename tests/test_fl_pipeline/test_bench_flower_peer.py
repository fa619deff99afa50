"""FedKB's half of the Flower comparison (`fl_pipeline.bench.flower_peer tff`): the rounds it
saves for Flower are the rounds TFF trained (same phones, same batches), and the Flower half
says what to run first when FedKB's half is missing. Flower itself lives in its own
environment (README, "FedKB against Flower"), so its half is not run here."""

import json
import os
import subprocess
import sys

import numpy as np

from fl_helpers import prepare_corpus


def test_tff_half_saves_the_rounds_tff_trained_and_skips_a_setting_no_phone_fills(tmp_path):
    data = prepare_corpus(tmp_path)
    out = tmp_path / "flower"
    done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.flower_peer", "tff", str(data),
                           "--rounds", "2", "--out", str(out)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "64: skipped, only 0 phones hold 64 windows" in done.stdout  # 8 windows each here
    report = json.loads((out / "tff.json").read_text())
    demo = report["settings"]["demo"]
    assert list(report["settings"]) == ["demo"] and len(demo["tff_round_s"]) == 2
    saved = np.load(out / "demo.npz")
    for r, trained in enumerate(demo["examples_per_round"]):
        windows = sum(len(saved[k]) for k in saved.files if k.startswith(f"r{r}_") and k.endswith("_x"))
        assert windows == trained > 0
        phones = {k.split("_")[1] for k in saved.files if k.startswith(f"r{r}_")}
        assert len(phones) == demo["clients_per_round"]


def test_a_missing_half_or_data_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.flower_peer", "flower",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "run the `tff` half first" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.flower_peer", "tff",
                           str(tmp_path / "no-data"), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2 and "no such data directory" in done.stderr
    assert "Traceback" not in done.stderr
