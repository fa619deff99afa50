"""The run directory: its layout, and the one module that reads and writes its files.

A `fedkb train` run and a `fedkb pretrain` directory share this layout; every stage
(training, evaluation, export, audit, bench, demo) opens them through here.

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
      eval.json              `fedkb eval`'s report
      audit.json             `fedkb audit`'s report
      worker.log             the TFF worker's own log
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from pathlib import Path

from datasets.errors import FedKBError, first_line
from datasets.layout import fedkb_command
from datasets.store import ClientStore
from datasets.vocab import VOCAB_FILE, Vocabulary, VocabularyError
from fl_pipeline.config import TrainConfig
from fl_pipeline.training.checkpoint_manifest import marked_versions, usable_versions
from fl_pipeline.training.participation import plan_rounds
from models.config import ModelConfig

CONFIG = "config.json"
SUMMARY = "summary.json"
VOCAB = VOCAB_FILE
INIT_WEIGHTS = "init_model.weights.h5"  # the run's copy of what it was initialized from
FINAL_WEIGHTS = "final_model.weights.h5"
CHECKPOINTS = "checkpoints"
TRAIN_METRICS = "metrics.csv"
EVAL_METRICS = "eval_metrics.csv"
TENSORBOARD = "tensorboard"
EVAL_REPORT = "eval.json"
AUDIT_REPORT = "audit.json"
WORKER_LOG = "worker.log"
WRITE_PROBE = ".fedkb-write-test"

# What `train` writes into a run directory (write_json's temporary files included).
RUN_FILES = (CONFIG, "config.tmp", VOCAB, INIT_WEIGHTS, CHECKPOINTS, TRAIN_METRICS, EVAL_METRICS,
             TENSORBOARD, FINAL_WEIGHTS, SUMMARY, "summary.tmp", WORKER_LOG, WRITE_PROBE)


class RunDirError(FedKBError):
    """A run directory that cannot be created, resumed or read."""


def read_json(path: Path, what_to_do: str | None = None) -> dict:
    """A JSON object from the run directory, or a one-line RunDirError saying what to do."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found; "
                          f"{what_to_do or f'is {path.parent} a FedKB run directory?'}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: dict) -> None:
    """Writes `path` whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


def load_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    config = read_json(run_dir / CONFIG)
    try:
        return ModelConfig(**config["model"]), TrainConfig.from_json(config["train"]), config["data"]
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / CONFIG}: not a FedKB run config ({e})") from None


def open_store(data_dir: Path) -> ClientStore:
    return ClientStore(data_dir)


def has_completed_round(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run worth keeping: a summary, or a checkpoint marked complete
    (intact or damaged: a damaged one is for the user to look at, never deleted)."""
    return (run_dir / SUMMARY).exists() or bool(marked_versions(run_dir / CHECKPOINTS))


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


def init_weights(run_dir: Path) -> Path | None:
    """The run's initial weights (its copy of --init-from), or None: a seeded random start."""
    config = read_json(run_dir / CONFIG)
    if not config.get("init"):
        return None
    path = run_dir / INIT_WEIGHTS
    if not path.is_file():
        raise RunDirError(f"{path}: missing; {run_dir} was initialized from "
                          f"{config['init']['from']} and needs that copy")
    return path


def check_writable(run_dir: Path) -> None:
    """Raises a one-line RunDirError unless a file can be created in `run_dir`."""
    probe = run_dir / WRITE_PROBE
    try:
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as e:
        usable, _ = usable_versions(run_dir / CHECKPOINTS)
        kept = (f"its last complete checkpoint (round {max(usable)}) is intact" if usable
                else "it has no complete checkpoint")
        raise RunDirError(f"{run_dir}: cannot write ({e.strerror}); {kept}; make the directory "
                          f"writable (or free space), then `{fedkb_command('train', '--resume', run_dir)}`") from None


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


def load_finished_run(run_dir: str | Path):
    """(Keras model with the final weights, vocabulary, config, summary) of a finished run,
    its files checked against each other: what `fedkb eval`, `export` and `audit` start from."""
    from models.next_word import build_model  # TensorFlow: only once the run is read

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found; train one with "
                          f"`{fedkb_command('train', '--out', run_dir)}`")
    unfinished = f"the run did not finish; finish it with `{fedkb_command('train', '--resume', run_dir)}`"
    config = read_json(run_dir / CONFIG, f"{run_dir} is not a `fedkb train` run directory")
    summary = read_json(run_dir / SUMMARY, unfinished)
    try:
        model_config = ModelConfig(**config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / CONFIG}: bad \"model\" section ({e})") from None
    try:
        vocab = Vocabulary.load(run_dir / VOCAB)
    except VocabularyError as e:
        raise RunDirError(str(e)) from None
    recorded = {CONFIG: (config.get("data") or {}).get("vocab_sha256"),
                SUMMARY: summary.get("vocab_sha256")}
    for name, sha in recorded.items():
        if sha != vocab.sha256:
            raise RunDirError(f"{run_dir / name}: vocab_sha256 {sha!r} differs from {VOCAB}'s "
                              f"{vocab.sha256}; the run directory mixes files of different runs")
    if model_config.vocab_size != len(vocab):
        raise RunDirError(f"{run_dir / CONFIG}: vocab_size {model_config.vocab_size} but "
                          f"{VOCAB} has {len(vocab)} tokens")
    weights = run_dir / FINAL_WEIGHTS
    if not weights.is_file():
        raise RunDirError(f"{weights}: missing; {unfinished}")
    try:  # the seed only fixes the weights loaded over them
        model = build_model(model_config, seed=0, weights_file=weights)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{weights}: cannot load the weights ({first_line(e)}); "
                          "the file is damaged or belongs to a different model config") from None
    return model, vocab, config, summary
