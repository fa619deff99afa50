"""`fedkb demo`: the whole pipeline on the built-in corpus, then the app.

Each stage reuses what an earlier demo left in the output folder (prepared
data, a finished or interrupted run, an export of that run's final weights),
so running it again goes straight to the app and an interrupted demo picks
up where it stopped.

`FEDKB_DEMO_TINY=1` runs the same stages on a toy scale (60 clients, 2
rounds of 3, an 8-dimensional model: well under a minute), for the tests
that run the commands the demo prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets.layout import DEMO_DIR, demo_paths, fedkb_command
from fl_pipeline.config import TrainConfig

# The default run (100 rounds of 10 phones): a few minutes on 2 cores.
DEMO_TRAINING = TrainConfig(eval_every=25)

TINY_ENV = "FEDKB_DEMO_TINY"
TINY_MAX_CLIENTS = 60
TINY_TRAINING = TrainConfig(rounds=2, clients_per_round=3, eval_every=2, checkpoint_every=2,
                            eval_clients=4, batch_size=8)
TINY_MODEL = {"embedding_dim": 8, "lstm_units": 16}


def is_tiny() -> bool:
    return os.environ.get(TINY_ENV) == "1"


def run_demo(out: Path, tiny: bool = False) -> Path:
    """Prepares, trains, exports (each only if needed); returns the model directory."""
    from datasets.prepare import PrepareConfig, prepare
    from fl_pipeline import run
    from fl_pipeline.export import export_is_current, export_run

    data_dir, run_dir, model_dir = demo_paths(out)
    training, model = (TINY_TRAINING, TINY_MODEL) if tiny else (DEMO_TRAINING, None)
    if not (data_dir / "stats.json").exists():
        print("1/3 preparing the built-in fortune corpus as federated clients", flush=True)
        prepare(PrepareConfig(corpus="fortunes", out=data_dir,
                              max_clients=TINY_MAX_CLIENTS if tiny else None))
    if (run_dir / "summary.json").exists():
        print(f"2/3 using the finished run in {run_dir}", flush=True)
    elif run.has_completed_round(run_dir):
        print(f"2/3 resuming the interrupted run in {run_dir}", flush=True)
        run.resume(run_dir)
    else:
        print(f"2/3 federated training: {training.rounds} rounds of "
              f"{training.clients_per_round} phones", flush=True)
        run.train(data_dir, run_dir, training, model)
    if export_is_current(run_dir, model_dir):
        print(f"3/3 using the model in {model_dir}, exported from this run", flush=True)
    else:
        print(f"3/3 exporting to TFLite in {model_dir}", flush=True)
        export_run(run_dir, model_dir)
    return model_dir


def next_commands(out: Path) -> list[tuple[str, str]]:
    """(what, command) a user can run on the demo's output, spelled to run as printed."""
    data_dir, _, model_dir = demo_paths(out)
    default = out == DEMO_DIR  # the reading commands default to the demo's paths
    model = [] if default else ["--model", model_dir]
    return [("open the keyboard (needs a display)", fedkb_command("app", *model)),
            ("suggestions in the terminal", fedkb_command("predict", "see you ", *model)),
            ("what the demo's clients hold", fedkb_command("data", "stats",
                                                           *([] if default else [data_dir])))]
