"""A finished run the bench may take as its federated run (`fedkb bench --federated-run RUN`).

`make demo` already trains the run `fedkb bench --quick` measures (the same
settings on the same chitchat store), so a user who ran the demo need not wait
for it again. The bench takes a run only if it is that run: finished, trained
with the preset's settings (save and worker settings aside, which do not change
the model), the same model, no warm start, and on a store whose
`clients.sqlite` is byte for byte the one the bench prepares (`fedkb data
prepare` is deterministic). Anything else is refused with one line, so a figure
is never reported for a run other than the one the preset describes. The run
is copied into the bench's work folder, pointed at the bench's own store, and
never written to.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import fedkb_command
from datasets.store import STORE_FILE
from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.run_dir import (CONFIG, FINAL_WEIGHTS, SUMMARY, load_run_config, read_json,
                                 write_json)
from models.config import ModelConfig

# Settings that change how a run is saved or where it runs, not the model it trains.
NOT_THE_MODEL = ("checkpoint_every", "workers", "worker_timeout")


class ReusedRunError(FedKBError):
    """A run the bench cannot take as its federated run."""


def check_settings(run: Path, config: BenchConfig) -> None:
    """Refuses `run` unless it is a finished run of the preset's training settings, model size
    and random start. Cheap: called before the bench prepares anything."""
    instead = f"train it again, or run `{fedkb_command('bench')}` without --federated-run"
    if not (run / SUMMARY).is_file() or not (run / FINAL_WEIGHTS).is_file():
        raise ReusedRunError(f"{run}: not a finished run (no {SUMMARY} or {FINAL_WEIGHTS}); finish "
                             f"it with `{fedkb_command('train', '--resume', run)}` or {instead}")
    model, train, _ = load_run_config(run)
    ours, theirs = config.train.to_json(), train.to_json()
    differ = [f"{key}={theirs[key]!r} (the bench's: {ours[key]!r})" for key in ours
              if key not in NOT_THE_MODEL and ours[key] != theirs.get(key)]
    if differ:
        raise ReusedRunError(f"{run}: trained with other settings than `fedkb bench "
                             f"--{config.preset}`'s: {', '.join(differ)}; {instead}")
    sizes = {**ModelConfig(vocab_size=model.vocab_size, seq_len=model.seq_len).to_json(),
             **config.model}
    if model.to_json() != sizes:
        raise ReusedRunError(f"{run}: its model {model.to_json()} is not the bench's size {sizes}; "
                             f"{instead}")
    if "init" in read_json(run / CONFIG):
        raise ReusedRunError(f"{run}: started from pretrained weights (--init-from), the bench's "
                             f"federated run from a random start; {instead}")


def adopt(run: Path, into: Path, data_dir: Path) -> dict:
    """Copies the checked `run` to `into`, with the bench's store at `data_dir` as its data,
    once that store is the run's own; returns the run's summary."""
    _, _, data = load_run_config(run)
    theirs, ours = Path(data["dir"]) / STORE_FILE, data_dir / STORE_FILE
    if not theirs.is_file() or _sha256(theirs) != _sha256(ours):
        raise ReusedRunError(f"{run}: its data ({data['dir']}) is not the corpus the bench "
                             f"prepared ({STORE_FILE} differs or is missing); prepare it again "
                             f"with `{fedkb_command('data', 'prepare', '--out', data['dir'], '--force')}` "
                             "and retrain, or run the bench without --federated-run")
    shutil.copytree(run, into)
    config = read_json(into / CONFIG)
    config["data"] = {**config["data"], "dir": str(data_dir.resolve())}
    write_json(into / CONFIG, config)
    return read_json(into / SUMMARY)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
