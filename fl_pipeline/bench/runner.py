"""`fedkb bench`: every measurement in order, then bench.json and the report.

    OUT/bench.json   every figure: value, unit, how it was measured, repetitions,
                     min/max, sizes, budget; plot series; notes; machine; config
    OUT/REPORT.md    tables and plots (OUT/*.png)
    OUT/work/        what the measurements produced (prepared data, training
                     runs, the exported model); replaced by the next bench run

Measurements share their artifacts: the prepared store feeds every run, the
federated run feeds the quality table, the communication figures and the
exported model, and the exported model feeds the device and personalization
figures.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import psutil
from tqdm.auto import tqdm

from datasets.errors import FedKBError
from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.bench.figures import Figures
from fl_pipeline.run_dir import SUMMARY, read_json

FORMAT = "fedkb-bench/1"
BENCH_FILE = "bench.json"
WORK_MARKER = ".fedkb-bench"
STEPS = ("prepare the corpus", "federated training", "five models, typed as a keyboard",
         "differential privacy", "memorization audit", "short runs: float32 and --compress",
         "strategies side by side", "TFF round vs plain loop", "two TFF workers",
         "memory over rounds", "export to TFLite", "device", "personalization", "communication",
         "report")
PACKAGES = ("tensorflow", "tensorflow-federated", "ai-edge-litert", "numpy", "kivy")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "*.py"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: importlib.metadata.version(name) for name in PACKAGES},
        "git_commit": git_commit(),
    }


def run_bench(config: BenchConfig, out: Path, show_progress: bool = True,
              federated_run: Path | None = None) -> dict:
    """Runs every measurement of `config`, writes OUT/bench.json and the report; returns the bench.

    `federated_run`: a finished run of the preset's settings on the same corpus (`make demo`'s
    for --quick) to measure instead of training one (`reused_run`)."""
    from datasets.store import ClientStore
    from fl_pipeline.training import run
    from fl_pipeline.bench import (communication, device, quality, report, reused_run, speed,
                                   strategies)
    from fl_pipeline.bench.texts import read_store_texts
    from fl_pipeline.export import export_run
    from models.next_word import ModelConfig

    out = Path(out)
    if federated_run is not None:  # refused now, not after the corpus is prepared
        reused_run.check_settings(Path(federated_run), config)
    work = out / "work"
    if work.exists():
        if not (work / WORK_MARKER).exists():
            raise FedKBError(f"{work} exists but was not written by `fedkb bench`; move it away "
                             "or choose another --out")
        shutil.rmtree(work)  # the previous bench run's artifacts
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("written by fedkb bench; replaced by the next run\n")
    started = time.perf_counter()
    bench = {"format": FORMAT, "preset": config.preset,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "machine": machine_info(), "load_average_at_start": os.getloadavg(),
             "config": config.to_json(),
             "federated_run": str(federated_run) if federated_run else None}
    figures = Figures()
    bar = tqdm(total=len(STEPS), unit="step", desc="fedkb bench", disable=not show_progress,
               dynamic_ncols=True)

    step_seconds = bench["step_seconds"] = {}

    @contextlib.contextmanager
    def step(name: str):
        assert name in STEPS, name
        bar.set_description(f"fedkb bench {config.preset}: {name}")
        step_started = time.perf_counter()
        yield
        step_seconds[name] = round(time.perf_counter() - step_started, 2)
        bar.update()

    try:
        with step("prepare the corpus"):
            data_dir = work / "data"
            speed.prepare_speed(config, data_dir, figures)
            store = ClientStore(data_dir)
            texts = read_store_texts(store)
            model_config = ModelConfig(vocab_size=len(store.vocab), seq_len=store.seq_len,
                                       **config.model)

        with step("federated training"):
            federated = work / "federated"
            if federated_run is None:
                summary = run.train(data_dir, federated, config.train, config.model,
                                    show_progress=False)
            else:
                summary = reused_run.adopt(Path(federated_run), federated, data_dir)

        with step("five models, typed as a keyboard"):
            five_models = quality.compare_models(federated, config, figures)

        with step("differential privacy"):
            dp_runs = quality.dp_effect(data_dir, work, config, federated, figures)

        with step("memorization audit"):
            quality.memorization(config, work, figures)

        with step("short runs: float32 and --compress"):
            short_runs = {}  # seed -> (float32 run, --compress run), short_rounds each
            for seed in config.strategy_seeds:
                tag = "" if seed == config.train.seed else f"-seed{seed}"
                compressed_run, plain_run = work / f"compressed{tag}", federated
                run.train(data_dir, compressed_run, config.compress_train(seed), config.model,
                          show_progress=False)
                plain_train = config.plain_short_train(seed)
                if plain_train:  # else the federated run is that run
                    plain_run = work / f"plain-short{tag}"
                    run.train(data_dir, plain_run, plain_train, config.model, show_progress=False)
                short_runs[seed] = (plain_run, compressed_run)
            compressed = read_json(short_runs[config.train.seed][1] / SUMMARY)

        with step("strategies side by side"):
            plain_run, compressed_run = short_runs.pop(config.train.seed)
            strategies.compare_strategies(federated, five_models, [
                strategies.FederatedRun("plain", "federated, float32", plain_run,
                                        "each phone's update"),
                strategies.FederatedRun("compressed", "federated, --compress", compressed_run,
                                        "each phone's quantized update of server-chosen rows"),
                *(strategies.FederatedRun(f"dp_noise_{noise:g}".replace(".", "p"),
                                          f"federated, DP noise {noise:g}", dp_run,
                                          "each phone's clipped update; the model it releases "
                                          "is user-level DP")
                  for noise, dp_run in dp_runs.items())], config, store, figures,
                other_seeds=list(short_runs.values()))

        with step("TFF round vs plain loop"):
            timing = speed.tff_overhead(store, model_config, config, work, figures)

        with step("two TFF workers"):
            speed.two_workers(store, model_config, config, work, figures, timing)

        with step("memory over rounds"):
            speed.memory_over_rounds(store, model_config, config, work, figures, timing)

        with step("export to TFLite"):
            model_dir = export_run(federated, work / "model")

        with step("device"):
            device.measure_device(model_dir, texts.heldout_texts(), config, work, figures)

        with step("personalization"):
            quality.personalization_gain(model_dir, data_dir, work, config, figures)

        with step("communication"):
            communication.communication(summary, compressed, config.train, store, texts, figures)

        with step("report"):
            bench.update(figures.to_json())
            bench["load_average_at_end"] = os.getloadavg()
            bench["wall_time_s"] = time.perf_counter() - started
            (out / BENCH_FILE).write_text(json.dumps(bench, indent=1, ensure_ascii=False), "utf-8")
            report.write_report(bench, out)
    finally:
        bar.close()
    return bench
