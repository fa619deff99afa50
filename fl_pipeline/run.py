"""A training run directory: create it, resume it, summarize it.

    RUN_DIR/
      config.json            model, training and data settings (all a later stage needs),
                             and with --init-from what the model was initialized from
      init_model.weights.h5  with --init-from: a copy of the initial weights (round 0)
      vocab.json             the vocabulary, with its SHA-256
      checkpoints/           TFF program state every K rounds (resumable)
      metrics.csv            training metrics per round
      eval_metrics.csv       held-out clients' metrics every K rounds
      tensorboard/           the same metrics as TensorBoard events
      final_model.weights.h5 Keras weights of the final model
      summary.json           rounds, clients, examples, final metrics, time, bytes, privacy,
                             participation (failed clients, skipped rounds), diverged rounds
      worker.log             the TFF worker's own log
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
import time
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import fedkb_command
from datasets.splits import split_problem
from fl_pipeline.checkpoint_manifest import marked_versions, no_usable_checkpoint, usable_versions
from fl_pipeline.config import TrainConfig
from fl_pipeline.participation import participation_summary, plan_rounds
from models.config import ModelConfig


class RunDirError(FedKBError):
    """A run directory that cannot be created, resumed or read."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found; is {path.parent} a FedKB run directory?") from None
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable ({e})") from None


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), "utf-8")
    tmp.replace(path)


def load_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    config = read_json(run_dir / "config.json")
    try:
        return ModelConfig(**config["model"]), TrainConfig.from_json(config["train"]), config["data"]
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / 'config.json'}: not a FedKB run config ({e})") from None


def open_store(data_dir: Path):
    from datasets.store import ClientStore

    return ClientStore(data_dir)


# What `train` writes into a run directory (write_json's temporary files included).
RUN_FILES = ("config.json", "config.tmp", "vocab.json", "init_model.weights.h5", "checkpoints",
             "metrics.csv",
             "eval_metrics.csv", "tensorboard", "final_model.weights.h5", "summary.json",
             "summary.tmp", "worker.log", ".fedkb-write-test")


def has_completed_round(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run worth keeping: a summary, or a checkpoint marked complete
    (intact or damaged: a damaged one is for the user to look at, never deleted)."""
    return (run_dir / "summary.json").exists() or bool(marked_versions(run_dir / "checkpoints"))


def discard_unstarted(run_dir: Path, remove_dir: bool) -> None:
    """Removes what `train` wrote into a run that completed no checkpoint, so that the next
    `fedkb train --out` starts it afresh (nothing of it could be resumed). Only the files
    in RUN_FILES; the directory itself only if `remove_dir` and it is then empty."""
    for name in RUN_FILES:
        path = run_dir / name
        with contextlib.suppress(OSError):  # best effort: never hide the error that got us here
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def check_trainable(store) -> None:
    """Refuses a store (say, from an older FedKB) whose splits cannot be trained and evaluated."""
    problem = split_problem(len(store.client_ids("train")),
                            int(store.stats.get("clients", {}).get("heldout", 0)),
                            len(store.client_ids("heldout_future")))
    if problem:
        raise RunDirError(f"{store.data_dir}: {problem}; prepare it again with more text "
                          f"(`{fedkb_command('data', 'prepare', '--out', store.data_dir, '--force')}`"
                          " with your --corpus)")


def init_weights(run_dir: Path) -> Path | None:
    """The run's initial weights (its copy of --init-from), or None: a seeded random start."""
    config = read_json(run_dir / "config.json")
    if not config.get("init"):
        return None
    from fl_pipeline.pretrain import INIT_WEIGHTS

    path = run_dir / INIT_WEIGHTS
    if not path.is_file():
        raise RunDirError(f"{path}: missing; {run_dir} was initialized from "
                          f"{config['init']['from']} and needs that copy")
    return path


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
        from fl_pipeline.pretrain import resolve_init

        init, init_file = resolve_init(Path(init_from), store, model_config)
    from fl_pipeline.pretrain import INIT_WEIGHTS, corpus_name

    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.data_dir / "vocab.json", run_dir / "vocab.json")
            if init_file is not None:
                shutil.copyfile(init_file, run_dir / INIT_WEIGHTS)
            write_json(run_dir / "config.json", {
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
    usable, damaged = usable_versions(run_dir / "checkpoints")
    if damaged and not usable:
        raise no_usable_checkpoint(run_dir / "checkpoints", damaged)
    return _run(run_dir, store, model_config, config, show_progress)


def check_writable(run_dir: Path) -> None:
    """Raises a one-line RunDirError unless a file can be created in `run_dir`."""
    probe = run_dir / ".fedkb-write-test"
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as e:
        usable, _ = usable_versions(run_dir / "checkpoints")
        kept = (f"its last complete checkpoint (round {max(usable)}) is intact" if usable
                else "it has no complete checkpoint")
        raise RunDirError(f"{run_dir}: cannot write ({e.strerror}); {kept}; make the directory "
                          f"writable (or free space), then `{fedkb_command('train', '--resume', run_dir)}`") from None


def _run(run_dir: Path, store, model_config: ModelConfig, config: TrainConfig,
         show_progress: bool) -> dict:
    from fl_pipeline.program import run_program

    started = time.monotonic()
    run_program(run_dir, store, model_config, config, show_progress)
    summary = summarize(run_dir, store, model_config, config, time.monotonic() - started)
    try:
        write_json(run_dir / "summary.json", summary)
    except OSError as e:
        raise RunDirError(f"{run_dir / 'summary.json'}: cannot write ({e.strerror}); training "
                          f"finished, so free space or make {run_dir} writable and run "
                          f"`{fedkb_command('train', '--resume', run_dir)}` to write it") from None
    return summary


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def metric_column(row: dict[str, float], name: str) -> float | None:
    """`name` from a CSV row whose columns are TFF's nested metric paths."""
    for column, value in row.items():
        if column == name or column.endswith("/" + name):
            return value
    return None


def round_plans(train_ids, config: TrainConfig):
    """Every round's participation of a run with `config` (the plan training followed):
    the one replay that summary.json and `fedkb bench` share."""
    per_round = min(config.clients_per_round, len(train_ids))
    return plan_rounds(train_ids, config.seed, config.rounds, per_round, config.dropout,
                       config.over_select)


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
    from fl_pipeline.privacy import dp_epsilon
    from models.next_word import build_model, count_parameters

    train_ids = store.client_ids("train")
    per_round = min(config.clients_per_round, len(train_ids))
    plans = round_plans(train_ids, config)
    rounds = read_metrics_csv(run_dir / "metrics.csv")
    # Rounds `SkipBadRounds` dropped because they diverged: their updates never reached the model.
    diverged = [int(r["round"]) for r in rounds if metric_column(r, "diverged")]
    clients_seen = {client for plan in plans if plan.round_num not in diverged
                    for client in plan.aggregated}
    evaluations = read_metrics_csv(run_dir / "eval_metrics.csv")
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
        "raw_text_bytes_of_training_clients": store.stats.get("splits", {}).get("train", {}).get("utf8_bytes"),
        "vocab_sha256": store.vocab.sha256,
        "init": read_json(run_dir / "config.json").get("init"),
    }
