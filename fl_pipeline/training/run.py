"""A training run: start it, resume it, summarize it.

Its directory (layout, files, loaders) belongs to `fl_pipeline/run_dir.py`; this module
decides what a run does: check the store, write the config, run the TFF program
(`training/program.py`), then the summary.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from datasets.layout import fedkb_command
from datasets.splits import split_problem
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import (CHECKPOINTS, CONFIG, INIT_WEIGHTS, SUMMARY, TRAIN_METRICS, EVAL_METRICS,
                                 VOCAB, RunDirError, check_writable, discard_unstarted,
                                 has_completed_round, load_run_config, metric_column, open_store,
                                 read_json, read_metrics_csv, round_plans, write_json)
from fl_pipeline.training.checkpoint_manifest import no_usable_checkpoint, usable_versions
from fl_pipeline.training.participation import participation_summary
from models.config import ModelConfig


def check_trainable(store) -> None:
    """Refuses a store (say, from an older FedKB) whose splits cannot be trained and evaluated."""
    problem = split_problem(len(store.client_ids("train")),
                            int(store.stats.get("clients", {}).get("heldout", 0)),
                            len(store.client_ids("heldout_future")))
    if problem:
        raise RunDirError(f"{store.data_dir}: {problem}; prepare it again with more text "
                          f"(`{fedkb_command('data', 'prepare', '--out', store.data_dir, '--force')}`"
                          " with your --corpus)")


def train(data_dir: Path, run_dir: Path, config: TrainConfig, model_overrides: dict | None = None,
          show_progress: bool = True, init_from: Path | None = None) -> dict:
    """Starts a new run in `run_dir` and trains it to the end.

    `run_dir` must not hold a run that completed a checkpoint; one that did not (it failed
    or was killed before its first checkpoint) is started afresh. If this run fails before
    its first checkpoint, what it wrote is removed again, so nothing blocks the next try."""
    store = open_store(data_dir)
    check_trainable(store)
    if has_completed_round(run_dir):
        raise RunDirError(f"{run_dir} already holds a run; continue it with "
                          f"`{fedkb_command('train', '--resume', run_dir)}` or choose another --out")
    created = not run_dir.exists()
    discard_unstarted(run_dir, remove_dir=False)
    model_config = ModelConfig(vocab_size=len(store.vocab), seq_len=store.seq_len,
                               **(model_overrides or {}))
    init, init_file = None, None
    if init_from is not None:  # checked before anything is written
        from fl_pipeline.training.pretrain import resolve_init

        init, init_file = resolve_init(Path(init_from), store, model_config)
    from fl_pipeline.training.pretrain import corpus_name

    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.data_dir / VOCAB, run_dir / VOCAB)
            if init_file is not None:
                shutil.copyfile(init_file, run_dir / INIT_WEIGHTS)
            write_json(run_dir / CONFIG, {
                "model": model_config.to_json(),
                "train": config.to_json(),
                "data": {"dir": str(store.data_dir.resolve()), "vocab_sha256": store.vocab.sha256,
                         "corpus": corpus_name(store), "public": False},
                **({"init": init} if init else {}),
            })
        except OSError as e:
            raise RunDirError(f"{run_dir}: cannot write the run directory ({e.strerror})") from None
        return _run(run_dir, store, model_config, config, show_progress)
    except BaseException:
        if not has_completed_round(run_dir):
            discard_unstarted(run_dir, remove_dir=created)
        raise


def resume(run_dir: Path, show_progress: bool = True) -> dict:
    """Continues a run from its last complete checkpoint, with its own config.

    Checks first, before TFF starts, what would otherwise fail minutes in:
    that the run directory can be written and that some checkpoint is usable."""
    model_config, config, data = load_run_config(run_dir)
    store = open_store(Path(data["dir"]))
    check_trainable(store)
    if store.vocab.sha256 != data["vocab_sha256"]:
        raise RunDirError(f"{data['dir']}: its vocabulary changed since {run_dir} started "
                          "(sha256 differs); prepare the data again with the run's settings")
    check_writable(run_dir)
    usable, damaged = usable_versions(run_dir / CHECKPOINTS)
    if damaged and not usable:
        raise no_usable_checkpoint(run_dir / CHECKPOINTS, damaged)
    return _run(run_dir, store, model_config, config, show_progress)


def _run(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
         show_progress: bool) -> dict:
    from fl_pipeline.training.program import run_program

    started = time.monotonic()
    run_program(run_dir, store, model_config, config, show_progress)
    summary = summarize(run_dir, store, model_config, config, time.monotonic() - started)
    try:
        write_json(run_dir / SUMMARY, summary)
    except OSError as e:
        raise RunDirError(f"{run_dir / SUMMARY}: cannot write ({e.strerror}); training "
                          f"finished, so free space or make {run_dir} writable and run "
                          f"`{fedkb_command('train', '--resume', run_dir)}` to write it") from None
    return summary


def measured_traffic(rounds: list[dict[str, float]], direction: str) -> dict | None:
    """What `metrics.csv` measured crossing the network in `direction` ("upload" or
    "download"; `compression.MeasureUpload`, `compression.measured_broadcast`), over
    the rounds that had clients; None if the run's aggregator does not measure it."""
    measured = [(metric_column(r, f"{direction}/bytes"), metric_column(r, f"{direction}/bytes_max"),
                 metric_column(r, f"{direction}/clients")) for r in rounds]
    measured = [m for m in measured if None not in m]
    if not measured:
        return None
    total = sum(m[0] for m in measured)
    client_rounds = sum(m[2] for m in measured)
    return {
        "bytes_per_client_per_round": total / client_rounds if client_rounds else 0.0,
        "max_bytes_per_client_per_round": max((m[1] for m in measured if m[2]), default=0),
        "run_bytes": int(total),
        "client_rounds": int(client_rounds),
    }


def compression_setting(config: TrainConfig) -> str | bool:
    """summary.json's `compression`: False, or which compression the run used."""
    if config.compress_tff8:
        return "tff.learning.compression_aggregator (8-bit)"
    if config.compress:
        bits = f"{config.compress_bits}-bit Hadamard" if config.compress_bits else "float32"
        return f"{bits}, {config.compress_rows:g} of the vocabulary rows per round"
    return False


def summarize(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
              wall_time_s: float) -> dict:
    # Imported here, not at the top: `fedkb train` refuses bad input before TensorFlow loads.
    from fl_pipeline.training.privacy import dp_epsilon
    from models.next_word import build_model, count_parameters

    train_ids = store.client_ids("train")
    per_round = min(config.clients_per_round, len(train_ids))
    plans = round_plans(train_ids, config)
    rounds = read_metrics_csv(run_dir / TRAIN_METRICS)
    # Rounds `SkipBadRounds` dropped because they diverged, and accepted rounds it later undid
    # (their update broke the model): neither round's update is in the model.
    diverged = [int(r["round"]) for r in rounds if metric_column(r, "diverged")]
    undone = [int(metric_column(r, "undid_round")) for r in rounds
              if metric_column(r, "undid_round")]
    clients_seen = {client for plan in plans if plan.round_num not in diverged + undone
                    for client in plan.aggregated}
    evaluations = read_metrics_csv(run_dir / EVAL_METRICS)
    final = evaluations[-1] if evaluations else {}
    heldout = {name: metric_column(final, name)
               for name in ("top1_accuracy", "top3_accuracy", "token_loss", "tokens")}
    if heldout["token_loss"] is not None:
        heldout["perplexity"] = math.exp(heldout["token_loss"])
    model = build_model(model_config)
    upload, download = measured_traffic(rounds, "upload"), measured_traffic(rounds, "download")
    dp = None
    if config.dp_noise_multiplier is not None:
        epsilon, delta = dp_epsilon(config.dp_noise_multiplier, per_round, len(train_ids), config.rounds)
        dp = {"noise_multiplier": config.dp_noise_multiplier, "epsilon": epsilon, "delta": delta}
    corpus = store.stats.get("corpus", {})
    return {
        "rounds": config.rounds,
        "clients_per_round": per_round,
        "training_clients": len(train_ids),
        "heldout_clients": len(store.client_ids("heldout_future")),
        "clients_seen": len(clients_seen),
        "examples": int(sum(metric_column(r, "num_examples") or 0 for r in rounds)),
        "corpus": corpus,
        "model_parameters": count_parameters(model),
        "dp": dp,
        "secure_aggregation": config.secure_agg,
        "compression": compression_setting(config),
        "final_metrics": {"heldout": heldout},
        "wall_time_s": wall_time_s,
        # Measured in every round (None where the aggregator does not: DP, secure aggregation).
        "upload_bytes_per_client_per_round": upload and upload["bytes_per_client_per_round"],
        "communication": {"upload": upload, "download": download},
        "participation": participation_summary(plans, per_round, config.dropout, config.over_select),
        "diverged_rounds": diverged,
        "diverged_round_count": len(diverged),
        "undone_rounds": undone,
        "raw_text_bytes_of_training_clients": store.stats.get("splits", {}).get("train", {}).get("utf8_bytes"),
        "vocab_sha256": store.vocab.sha256,
        "init": read_json(run_dir / CONFIG).get("init"),
    }
