"""Speed: what TFF's orchestration costs, whether a second worker helps, whether
memory stays flat, and how long preparing the corpus takes.

- TFF round: `process.next(state, client ids)` of FedKB's real training
  process (`fl_pipeline.training.learning_process`) in FedKB's own execution context, state
  materialized every round as `tff.learning.programs.train_model` does.
- Plain loop: the same clients (same seeded sampler), the same batches (the
  same `to_model_batches` pipeline on the same store) and the same SGD steps,
  one `tf.function` step per batch in this process, updates averaged like
  FedAvg. No serialization, no metrics, no executor: the floor a TFF round
  is held to.
- Throughput: real (non-pad) tokens per second of both, and their model
  FLOPs utilization against this machine's measured float32 matmul peak
  (issue 14).
- Workers: the same rounds on two loopback `worker_binary`s
  (`fl_pipeline.training.runtime.start_worker`, `TrainConfig.workers`).
- Memory: resident size of this process plus its worker processes after
  every round.
- `fedkb data prepare`: the CLI in a fresh process, as a user runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from datasets.errors import FedKBError
from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.bench.figures import Budget, Figures
from fl_pipeline.config import TrainConfig
from models.next_word import ModelConfig, build_model


@dataclass
class RoundLog:
    """Per round: the clients trained, wall seconds, resident bytes (process tree) after it,
    examples trained and, in the plain loop, real (scored, non-pad) tokens trained."""

    clients: list[list[str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def process_tree_rss() -> int:
    """Resident bytes of this process and all its children (the TFF workers)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def seeded_cohorts(client_ids: list[str], train: TrainConfig, rounds: int) -> list[list[str]]:
    """Each round's clients as a FedKB run with `train`'s seed samples them from `client_ids`."""
    from fl_pipeline.training.client_data import SeededClientIterator

    sampler = SeededClientIterator(client_ids, train.seed)
    return [sampler.select(min(train.clients_per_round, len(client_ids))) for _ in range(rounds)]


def tff_rounds(store, model_config: ModelConfig, train: TrainConfig, cohorts: list[list[str]],
               log_path: Path | None = None) -> RoundLog:
    """One round of the real TFF training process per cohort (a list of client ids), timed
    one by one."""
    from fl_pipeline.training.runtime import federated_context

    with federated_context(train.workers, log_path, train.worker_timeout):
        return asyncio.run(_tff_rounds(store, model_config, train, cohorts))


async def _tff_rounds(store, model_config: ModelConfig, train: TrainConfig,
                      cohorts: list[list[str]]) -> RoundLog:
    import tensorflow_federated as tff

    from fl_pipeline.training.learning_process import build_training_process
    from fl_pipeline.training.program import find_metric

    process = build_training_process(model_config, train, store.client_data("train"))
    initial = tff.learning.models.ModelWeights.from_model(build_model(model_config, seed=train.seed))
    state = await tff.program.materialize_value(process.initialize())
    state = await tff.program.materialize_value(process.set_model_weights(state, initial))
    log = RoundLog()
    for clients in cohorts:
        started = time.perf_counter()
        output = await tff.program.materialize_value(process.next(state, clients))
        log.seconds.append(time.perf_counter() - started)
        state = output.state
        log.clients.append(list(clients))
        log.rss_bytes.append(process_tree_rss())
        log.examples.append(int(find_metric(output.metrics, "num_examples")))
    return log


def plain_rounds(store, model_config: ModelConfig, train: TrainConfig,
                 cohorts: list[list[str]]) -> RoundLog:
    """The same rounds as `tff_rounds` (clients, batches, SGD steps) in a plain TF loop."""
    import tensorflow as tf

    from datasets.vocab import IGNORED_TARGET_IDS
    from fl_pipeline.training.client_data import to_model_batches
    from models.train_step import train_step

    client_data = store.client_data("train")
    model = build_model(model_config, seed=train.seed)
    variables = model.trainable_variables
    global_weights = [v.numpy() for v in variables]
    sgd_step = train_step(model, tf.keras.optimizers.SGD(train.client_lr))  # as local-only's

    def client_update(client_id: str) -> tuple[int, int]:
        """One client's local epochs over the batches TFF's dataset computation builds;
        (examples, real tokens) trained."""
        batches = to_model_batches(client_data.create_tf_dataset_for_client(client_id),
                                   batch_size=train.batch_size, epochs=train.local_epochs,
                                   max_examples=train.max_examples_per_client,
                                   shuffle_seed=train.seed)
        examples = tokens = 0
        for x, y in batches:
            sgd_step(x, y)
            examples += int(x.shape[0])
            tokens += int(np.isin(y.numpy(), IGNORED_TARGET_IDS, invert=True).sum())
        return examples, tokens

    log = RoundLog()
    for clients in cohorts:
        started = time.perf_counter()
        update = [np.zeros_like(w) for w in global_weights]
        total = tokens = 0
        for client_id in clients:
            for v, w in zip(variables, global_weights):
                v.assign(w)
            n, client_tokens = client_update(client_id)
            for u, v, w in zip(update, variables, global_weights):
                u += n * (v.numpy() - w)  # FedAvg: updates weighted by examples
            total += n
            tokens += client_tokens
        global_weights = [w + u / max(total, 1) for w, u in zip(global_weights, update)]
        log.seconds.append(time.perf_counter() - started)
        log.clients.append(list(clients))
        log.rss_bytes.append(process_tree_rss())
        log.examples.append(total)
        log.tokens.append(tokens)
    return log


def _round_sizes(config: BenchConfig, model_config: ModelConfig, log: RoundLog) -> dict:
    train = config.train
    return {"clients_per_round": train.clients_per_round, "batch_size": train.batch_size,
            "local_epochs": train.local_epochs,
            "max_examples_per_client": train.max_examples_per_client,
            "mean_examples_per_round": float(np.mean(log.examples)),
            "timed_rounds": len(log.seconds) - config.warmup_rounds,
            "warmup_rounds_not_timed": config.warmup_rounds,
            "vocab_size": model_config.vocab_size, "embedding_dim": model_config.embedding_dim,
            "lstm_units": model_config.lstm_units}


def tff_overhead(store, model_config: ModelConfig, config: BenchConfig, work_dir: Path,
                 figures: Figures) -> RoundLog:
    """TFF round time against the same local steps in a plain loop; clients per second."""
    rounds, skip = config.timing_rounds, config.warmup_rounds
    cohorts = seeded_cohorts(store.client_ids("train"), config.train, rounds)
    tff_log = tff_rounds(store, model_config, config.train, cohorts, work_dir / "worker-timing.log")
    plain_log = plain_rounds(store, model_config, config.train, cohorts)
    if tff_log.examples != plain_log.examples:
        raise RuntimeError(f"the plain loop trained {plain_log.examples} examples per round, "
                           f"TFF {tff_log.examples}: not the same work")
    sizes = _round_sizes(config, model_config, tff_log)
    figures.timing("speed.tff_round_s", "TFF round (1 local worker)", tff_log.seconds[skip:], "s",
                   "process.next(state, clients) of fl_pipeline.training.learning_process.build_training_process "
                   "in fl_pipeline.training.runtime.federated_context(), state materialized each round",
                   sizes=sizes)
    figures.timing("speed.plain_round_s", "same local steps, plain tf.function loop",
                   plain_log.seconds[skip:], "s",
                   "fl_pipeline.bench.speed.plain_rounds: the same clients, batches and SGD "
                   "steps in one process, updates averaged like FedAvg", sizes=sizes)
    ratios = [t / p for t, p in zip(tff_log.seconds[skip:], plain_log.seconds[skip:])]
    figures.timing("speed.tff_over_plain", "TFF round / plain loop round", ratios, "ratio",
                   "per-round ratio of the two figures above (same rounds, same clients)",
                   sizes=sizes, budget=Budget("<=", 1.2, "issue 14 goal; issue 4's was 1.5"))
    throughput(tff_log, plain_log, model_config, config, sizes, figures)
    figures.add("speed.clients_per_s", "clients per second (TFF, 1 worker)",
                config.train.clients_per_round / figures.figures["speed.tff_round_s"].value,
                "clients/s", "clients per round / median TFF round time", sizes=sizes)
    round_numbers = list(range(1, rounds + 1))
    figures.add_series("round_time.tff_1_worker", round_numbers, tff_log.seconds, "round", "s")
    figures.add_series("round_time.plain_loop", round_numbers, plain_log.seconds, "round", "s")
    return tff_log


def matmul_peak_gflops(n: int = 2048, repetitions: int = 5) -> list[float]:
    """This machine's dense float32 matmul rate (n x n @ n x n in a tf.function), per run."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(0, 1))
    b = tf.random.stateless_normal((n, n), seed=(0, 2))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()  # tracing
    rates = []
    for _ in range(repetitions):
        started = time.perf_counter()
        matmul().numpy()
        rates.append(2 * n ** 3 / (time.perf_counter() - started) / 1e9)
    return rates


def throughput(tff_log: RoundLog, plain_log: RoundLog, model_config: ModelConfig,
               config: BenchConfig, sizes: dict, figures: Figures) -> None:
    """Real (non-pad) tokens per second of a TFF round and of the plain loop, and their model
    FLOPs utilization against this machine's measured matmul peak (issue 14)."""
    from models.next_word import training_flops_per_token

    skip = config.warmup_rounds
    tokens = plain_log.tokens[skip:]  # the same batches in both (examples checked equal)
    flops = training_flops_per_token(model_config)
    peak = figures.timing("speed.matmul_peak_gflops", "float32 matmul peak (2048²)",
                          matmul_peak_gflops(), "GFLOPS", "tf.matmul of two 2048 x 2048 float32 "
                          "matrices in a tf.function, 2n³ FLOPs per call, one call per sample")
    sizes = {**sizes, "training_flops_per_token": flops,
             "real_tokens_per_round": float(np.mean(tokens))}
    for name, label, log in (("tff", "TFF round", tff_log), ("plain", "plain loop", plain_log)):
        rates = [t / s for t, s in zip(tokens, log.seconds[skip:])]
        rate = figures.timing(f"speed.{name}_tokens_per_s", f"{label}: real tokens per second",
                              rates, "tokens/s", "non-pad, non-<bos> targets trained in a "
                              "round (counted in the plain loop's batches) / the round's seconds",
                              sizes=sizes)
        goal = Budget(">=", 30, "issue 14 goal") if name == "plain" else None
        figures.add(f"speed.{name}_mfu", f"{label}: model FLOPs utilization",
                    100 * rate.value * flops / (peak.value * 1e9), "% of peak",
                    f"speed.{name}_tokens_per_s x models.next_word.training_flops_per_token "
                    "(forward + backward of LSTM, projection and tied output layer) / "
                    "speed.matmul_peak_gflops", sizes=sizes, budget=goal)


def two_workers(store, model_config: ModelConfig, config: BenchConfig, work_dir: Path,
                figures: Figures, one_worker: RoundLog) -> None:
    """The timing rounds again, split over two loopback TFF workers."""
    import portpicker

    from fl_pipeline.training.runtime import start_worker, stop_worker

    ports = [portpicker.pick_unused_port() for _ in range(2)]
    workers = [start_worker(port, work_dir / f"worker-{port}.log") for port in ports]
    try:
        train = TrainConfig.from_json({**config.train.to_json(),
                                       "workers": [f"localhost:{port}" for port in ports]})
        log = tff_rounds(store, model_config, train, one_worker.clients)
    finally:
        for worker in workers:
            stop_worker(worker)
    skip = config.warmup_rounds
    sizes = _round_sizes(config, model_config, log)
    figures.timing("speed.two_workers_round_s", "TFF round (2 loopback workers)", log.seconds[skip:],
                   "s", "as speed.tff_round_s with TrainConfig(workers=(two localhost ports)), "
                   "workers started by fl_pipeline.training.runtime.start_worker", sizes=sizes)
    ratios = [two / one for two, one in zip(log.seconds[skip:], one_worker.seconds[skip:])]
    figures.timing("speed.two_over_one_worker", "2 workers / 1 worker round time", ratios, "ratio",
                   "per-round ratio, same rounds and clients (below 1: the second worker helps)",
                   sizes=sizes)
    figures.add_series("round_time.tff_2_workers", list(range(1, len(log.seconds) + 1)),
                       log.seconds, "round", "s")


def memory_over_rounds(store, model_config: ModelConfig, config: BenchConfig, work_dir: Path,
                       figures: Figures, timing: RoundLog) -> None:
    """Resident memory growth: rounds 50 -> 500 with --full, else over the timing rounds."""
    if config.memory_rounds:
        cohorts = seeded_cohorts(store.client_ids("train"), config.train, config.memory_rounds)
        log = tff_rounds(store, model_config, config.train, cohorts, work_dir / "worker-memory.log")
        first, last = config.memory_window
        budget = Budget("<", 10, "issue 4: flat within 10% from round 50 to 500")
    else:
        log = timing
        first, last = config.warmup_rounds + 1, len(log.rss_bytes)
        budget = None
        figures.note(f"memory: tracked over the {last} timing rounds only (growth from round "
                     f"{first} to {last}); issue 4's budget (under 10% from round 50 to 500) "
                     "is checked by `fedkb bench --full`")
    rss = log.rss_bytes
    how = ("psutil RSS of the bench process plus its TFF worker processes after each "
           f"process.next round (1 worker, {config.train.clients_per_round} clients per round)")
    sizes = {"rounds": len(rss), "from_round": first, "to_round": last}
    figures.add("speed.memory.rss_mb", f"resident memory after round {last}", rss[last - 1] / 1e6,
                "MB", how, sizes=sizes)
    figures.add("speed.memory.growth_pct", f"resident memory growth, round {first} to {last}",
                100 * (rss[last - 1] / rss[first - 1] - 1), "%", how, sizes=sizes, budget=budget)
    figures.add_series("memory", list(range(1, len(rss) + 1)), [b / 1e6 for b in rss], "round",
                       "MB")


def time_prepare(prepare_args: tuple[str, ...], out: Path, repetitions: int) -> list[float]:
    """Wall seconds of `fedkb data prepare ... --out OUT` in a fresh process; leaves the last store."""
    command = [sys.executable, "-m", "fl_pipeline.cli", "data", "prepare", *prepare_args,
               "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    seconds = []
    for _ in range(repetitions):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            last_line = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise FedKBError(f"`fedkb data prepare {' '.join(prepare_args)}` failed: {last_line}")
    return seconds


def prepare_speed(config: BenchConfig, out: Path, figures: Figures) -> None:
    seconds = time_prepare(config.prepare_args, out, config.prepare_repetitions)
    stats = json.loads((out / "stats.json").read_text("utf-8"))
    figures.timing("speed.prepare_s", "`fedkb data prepare`", seconds, "s",
                   f"`fedkb data prepare {' '.join(config.prepare_args)} --out DIR` in a fresh "
                   "process (python -m fl_pipeline.cli), wall time including start-up",
                   sizes={"clients": stats["clients"]["kept"],
                          "texts": sum(s["texts"] for s in stats["splits"].values()),
                          "utf8_bytes": sum(s["utf8_bytes"] for s in stats["splits"].values())},
                   budget=Budget("<", 30, "issue 3: under 30 s on 2 cores"))
