"""`fedkb demo`: the whole pipeline on the built-in corpus, then the app.

Each stage reuses what an earlier demo left in the output folder (prepared
data, a finished or interrupted run, an export), so running it again is quick
and an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from fl_pipeline.config import TrainConfig

# The default run (100 rounds of 10 phones): a few minutes on 2 cores.
DEMO_TRAINING = TrainConfig(eval_every=25)


def run_demo(out: Path, open_app: bool = True, training: TrainConfig = DEMO_TRAINING) -> Path:
    """Prepares, trains, exports; returns the model directory."""
    from datasets.prepare import PrepareConfig, prepare
    from fl_pipeline import run
    from fl_pipeline.export import export_run

    data_dir, run_dir, model_dir = out / "data", out / "run", out / "model"
    if not (data_dir / "stats.json").exists():
        print("1/3 preparing the built-in fortune corpus as federated clients", flush=True)
        prepare(PrepareConfig(corpus="fortunes", out=data_dir))
    if (run_dir / "summary.json").exists():
        print(f"2/3 using the finished run in {run_dir}", flush=True)
    elif (run_dir / "config.json").exists():
        print(f"2/3 resuming the interrupted run in {run_dir}", flush=True)
        run.resume(run_dir)
    else:
        print(f"2/3 federated training: {training.rounds} rounds of "
              f"{training.clients_per_round} phones", flush=True)
        run.train(data_dir, run_dir, training)
    print(f"3/3 exporting to TFLite in {model_dir}", flush=True)
    export_run(run_dir, model_dir)
    return model_dir
