"""`fedkb eval`: the federated run against centralized, local-only and n-gram.

All four are scored on the same held-out clients' `future` texts; the
table goes to the terminal and `eval.json` in the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from datasets.layout import fedkb_command
from fl_pipeline.baselines import (KneserNeyTrigram, score_keras, score_local_only,
                                   train_centralized)
from fl_pipeline.client_data import to_model_batches
from fl_pipeline.run import RunDirError, load_run_config, open_store, read_json, write_json
from models.next_word import build_model

DESCRIPTIONS = {
    "federated": "{clients_seen} phones, {rounds} rounds; text stays on the phones",
    "centralized": "pooled text of {training_clients} phones on a server; no privacy",
    "local-only": "each held-out phone alone on its own past texts",
    "n-gram": "Kneser-Ney trigram on the pooled text of {training_clients} phones",
}


def load_final_model(run_dir: Path):
    model_config, _, _ = load_run_config(run_dir)
    weights = run_dir / "final_model.weights.h5"
    if not weights.exists():
        raise RunDirError(f"{weights}: not found; finish the run with "
                          f"`{fedkb_command('train', '--resume', run_dir)}`")
    model = build_model(model_config)
    model.load_weights(str(weights))
    return model


def compare(run_dir: Path, show_progress: bool = True, centralized_curve_at: Sequence[int] = ()
            ) -> dict:
    """Scores the four models; writes and returns the report (eval.json).

    With `centralized_curve_at` (example counts, e.g. those at which the
    federated run was evaluated), the centralized model is also scored
    along its training, for a learning curve: `models.centralized.curve`.
    """
    model_config, config, data = load_run_config(run_dir)
    summary = read_json(run_dir / "summary.json")
    store = open_store(Path(data["dir"]))
    future = store.client_data("heldout_future")
    past = store.client_data("heldout_past")
    heldout_ids = store.client_ids("heldout_future")
    pooled_future = to_model_batches(future.create_tf_dataset_from_all_clients(), batch_size=64)
    results = {}
    timings = {}

    def timed(name, fn):
        started = time.monotonic()
        results[name] = fn().result() if name in ("federated", "centralized") else fn()
        timings[name] = time.monotonic() - started

    timed("federated", lambda: score_keras(load_final_model(run_dir), pooled_future))
    train_pool = store.client_data("train").create_tf_dataset_from_all_clients(seed=config.seed)
    curve = []

    def score_along(examples_seen, model):
        curve.append({"examples": examples_seen,
                      **score_keras(model, pooled_future).result().to_json()})

    timed("centralized", lambda: score_keras(train_centralized(
        model_config, train_pool, examples=summary["examples"], batch_size=config.batch_size,
        seed=config.seed, show_progress=show_progress,
        on_checkpoint=score_along if centralized_curve_at else None,
        checkpoint_at=centralized_curve_at), pooled_future))
    timed("local-only", lambda: score_local_only(
        model_config, past, future, heldout_ids, batch_size=config.batch_size,
        learning_rate=config.client_lr, seed=config.seed, show_progress=show_progress))

    def ngram():
        windows = (e["tokens"].numpy() for e in train_pool)
        model = KneserNeyTrigram(model_config.vocab_size).fit(windows)
        return model.score([e["tokens"].numpy() for e in future.create_tf_dataset_from_all_clients()],
                           show_progress=show_progress)

    timed("n-gram", ngram)
    report = {
        "heldout_clients": len(heldout_ids),
        "example_passes": summary["examples"],
        "models": {name: {**score.to_json(), "seconds": timings[name],
                          "description": DESCRIPTIONS[name].format(**summary)}
                   for name, score in results.items()},
    }
    if centralized_curve_at:
        steps = max(1, summary["examples"] // config.batch_size)
        final = {"examples": steps * config.batch_size, **results["centralized"].to_json()}
        report["models"]["centralized"]["curve"] = [
            point for point in curve if point["examples"] < final["examples"]] + [final]
    write_json(run_dir / "eval.json", report)
    return report


def format_table(report: dict) -> str:
    lines = [f"held-out clients: {report['heldout_clients']} (scored on their future texts)",
             f"{'model':<12} {'top-1':>7} {'top-3':>7} {'perplexity':>11}  trained on"]
    for name, row in report["models"].items():
        lines.append(f"{name:<12} {row['top1_accuracy']:>7.3f} {row['top3_accuracy']:>7.3f} "
                     f"{row['perplexity']:>11.1f}  {row['description']}")
    return "\n".join(lines)
