"""`fedkb eval`: the federated run against centralized, local-only, n-gram and bigram.

All five are scored on the same held-out clients' `future` texts: token
metrics (`fl_pipeline.evaluation.baselines`) and, with a `KeyboardEval`, keyboard
metrics (`fl_pipeline.evaluation.keyboard_metrics`: the strip's next word and
completions, keystroke savings); the table goes to the terminal and
`eval.json` in the run directory.

How the neural models reach the keyboard metrics: federated and
centralized are compared as what users get, their exported quantized
`model.tflite` (`fl_pipeline.export`) run by LiteRT through the app's own
`keyboard_app.predictor.Predictor`. The server side must not import
`keyboard_app`, so `compare` does not: it takes a factory
`model_dir -> Suggester` (`KeyboardEval.suggester_for_model_dir`) and the
`fedkb eval` command, the one place that wires server and device together
(it already runs `fedkb predict` and `fedkb app`), passes `Predictor`. That
keeps a single predictor implementation (no copy of the LiteRT code under
`models/`), while the word rules both sides apply live in `models/suggest.py`.
Local-only trains one model per held-out phone; exporting each would
dominate the run time, so it is judged in Keras through the same word rules
(`keyboard_metrics.keras_suggester`), and the n-gram and bigram through
`keyboard_metrics.ngram_suggester`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fl_pipeline.config import EVAL_MODELS, check_eval_models
from fl_pipeline.evaluation import keyboard_metrics
from fl_pipeline.evaluation.baselines import (KneserNeyTrigram, WordPairBigram, score_keras,
                                              score_local_only, train_centralized)
from fl_pipeline.run_dir import (EVAL_REPORT, RunDirError, init_weights, load_finished_run,
                                 load_run_config, open_store, write_json)
from fl_pipeline.training.client_data import to_model_batches
from models.next_word import build_model
from models.suggest import Suggester

DESCRIPTIONS = {
    "federated": "{clients_seen} phones, {rounds} rounds; text stays on the phones",
    "centralized": "pooled text of {training_clients} phones on a server; no privacy",
    "local-only": "each held-out phone alone on its own past texts ({local_only_clients} phones)",
    "n-gram": "Kneser-Ney trigram on the pooled text of {training_clients} phones",
    "bigram": "word-pair counts on the pooled text of {training_clients} phones",
}
TFLITE = "model.tflite (quantized) on LiteRT"
PERSONAL_PLOT = "personalization_gains.png"
SUGGESTERS = {"federated": TFLITE, "centralized": TFLITE, "local-only": "Keras",
              "n-gram": "n-gram", "bigram": "word pairs"}


@dataclass(frozen=True)
class KeyboardEval:
    """How `compare` computes the keyboard metrics (`fl_pipeline.evaluation.keyboard_metrics`)."""

    suggester_for_model_dir: Callable[[Path], Suggester]  # e.g. keyboard_app's Predictor
    max_users: int | None = None  # a seeded sample of the held-out users (None: all)
    max_messages_per_user: int = keyboard_metrics.MAX_MESSAGES_PER_USER
    seed: int = 0
    # On-device personalization of the federated model: `personalizer(model_dir, work_dir)`
    # returns `personalize(past messages) -> Suggester` (keyboard_app.personal.personalizer);
    # the held-out users with at least `min_past_messages` past messages (a seeded sample of
    # `max_users` of them) are typed before and after it: eval.json's `personalization`.
    personalizer: Callable[[Path, Path], Callable[[list[str]], Suggester]] | None = None
    min_past_messages: int = 20


def initial_weights(run_dir: Path, model_config) -> list | None:
    """The federated run's initial weights when it had a warm start (--init-from), else None:
    centralized and local-only then start from the same weights, so that only the training
    differs."""
    path = init_weights(run_dir)
    return None if path is None else build_model(model_config, weights_file=path).get_weights()


def compare(run_dir: Path, show_progress: bool = True, centralized_curve_at: Sequence[int] = (),
            keyboard: KeyboardEval | None = None, models: Sequence[str] = EVAL_MODELS) -> dict:
    """Scores the five models (or those named in `models`); writes and returns the report
    (eval.json).

    Centralized and local-only start from the federated run's initial weights when it was
    warm-started (`fedkb train --init-from`; `initial_weights`), from the seeded random
    model otherwise, as the federated run did.

    With `centralized_curve_at` (example counts, e.g. those at which the
    federated run was evaluated), the centralized model is also scored
    along its training, for a learning curve: `models.centralized.curve`.
    With `keyboard`, each model also gets `models.<name>.keyboard`.
    """
    try:
        models = check_eval_models(models)
    except ValueError as e:
        raise RunDirError(str(e)) from None
    model_config, config, data = load_run_config(run_dir)
    federated, _, run_config, summary = load_finished_run(run_dir)
    store = open_store(Path(data["dir"]))
    future = store.client_data("heldout_future")
    past = store.client_data("heldout_past")
    heldout_ids = store.client_ids("heldout_future")
    pooled_future = to_model_batches(future.create_tf_dataset_from_all_clients(), batch_size=64)
    future_windows = [e["tokens"].numpy() for e in future.create_tf_dataset_from_all_clients()]
    vocab, T = store.vocab, model_config.seq_len
    messages, heldout_texts = _keyboard_messages(store, keyboard) if keyboard else ({}, {})
    results, timings, keyboards = {}, {}, {}

    def timed(name, fn):
        started = time.monotonic()
        results[name] = fn()
        timings[name] = time.monotonic() - started

    def type_with(name, suggester_for_user):
        started = time.monotonic()
        tallies = {user: keyboard_metrics.type_messages(suggester_for_user(user), texts, vocab)
                   for user, texts in messages.items()}
        keyboards[name] = {"suggester": SUGGESTERS[name], **keyboard_metrics.summarize(tallies),
                           "seconds": time.monotonic() - started}

    def type_with_tflite(name, model):
        nonlocal personalization
        with tempfile.TemporaryDirectory(prefix="fedkb-eval-") as tmp:
            from fl_pipeline.export import export_model  # TFLite converter: only when needed

            model_dir = export_model(model, vocab, Path(tmp) / "model",
                                     training={"note": f"{name} model, exported by fedkb eval"})
            suggester = keyboard.suggester_for_model_dir(model_dir)
            type_with(name, lambda user: suggester)
            if name == "federated" and keyboard.personalizer is not None:
                personalization = _personalize(keyboard, model_dir, suggester, heldout_texts,
                                               Path(tmp) / "personal", vocab, show_progress)

    personalization = None
    init = initial_weights(run_dir, model_config)
    if "federated" in models:
        timed("federated", lambda: score_keras(federated, pooled_future).result())
        if keyboard:
            type_with_tflite("federated", federated)
    train_pool = store.client_data("train").create_tf_dataset_from_all_clients(seed=config.seed)
    curve = []

    def score_along(examples_seen, model):
        curve.append({"examples": examples_seen,
                      **score_keras(model, pooled_future).result().to_json()})

    if "centralized" in models:
        started = time.monotonic()
        centralized = train_centralized(
            model_config, train_pool, examples=summary["examples"], batch_size=config.batch_size,
            seed=config.seed, show_progress=show_progress,
            on_checkpoint=score_along if centralized_curve_at else None,
            checkpoint_at=centralized_curve_at, initial_weights=init)
        timed("centralized", lambda: score_keras(centralized, pooled_future).result())
        timings["centralized"] = time.monotonic() - started  # training included, as for the others
        if keyboard:
            type_with_tflite("centralized", centralized)

    local_tallies, local_seconds = {}, [0.0]

    def type_local(client_id, predict):
        if client_id in messages:
            started = time.monotonic()
            local_tallies[client_id] = keyboard_metrics.type_messages(
                keyboard_metrics.keras_suggester(predict, vocab, T), messages[client_id], vocab)
            local_seconds[0] += time.monotonic() - started

    # Local-only trains a model per phone on all its past text, the costliest baseline (on
    # chitchat about 5,400 steps for 134 phones: 20 minutes on 2 cores). With a keyboard
    # sample it trains only the sampled phones, and its token figures rest on them.
    local_ids = sorted(messages) if keyboard and keyboard.max_users else heldout_ids
    if "local-only" in models:
        timed("local-only", lambda: score_local_only(
            model_config, past, future, local_ids, batch_size=config.batch_size,
            learning_rate=config.client_lr, seed=config.seed, show_progress=show_progress,
            on_client=type_local if keyboard else None, initial_weights=init))
    if keyboard and "local-only" in models:
        keyboards["local-only"] = {"suggester": SUGGESTERS["local-only"],
                                   **keyboard_metrics.summarize(local_tallies),
                                   "seconds": local_seconds[0]}  # also in local-only's seconds

    train_windows = [e["tokens"].numpy() for e in train_pool] if (
        {"n-gram", "bigram"} & set(models)) else []
    for name, kind in (("n-gram", KneserNeyTrigram), ("bigram", WordPairBigram)):
        if name not in models:
            continue
        started = time.monotonic()
        model = kind(model_config.vocab_size).fit(train_windows)
        timed(name, lambda: model.score(future_windows, show_progress=show_progress))
        timings[name] = time.monotonic() - started
        if keyboard:
            suggester = keyboard_metrics.ngram_suggester(model, vocab, T)
            type_with(name, lambda user: suggester)
    init_record = run_config.get("init")
    described = {**summary, "local_only_clients": len(local_ids)}
    report = {
        "heldout_clients": len(heldout_ids),
        "local_only_clients": len(local_ids),
        "init": ({"from": init_record["from"], "corpus": init_record["corpus"],
                  "applies_to": ["federated", "centralized", "local-only"]}
                 if init_record else None),
        "example_passes": summary["examples"],
        "models": {name: {**score.to_json(), "seconds": timings[name],
                          "description": DESCRIPTIONS[name].format(**described) + (
                              f"; from the warm start on {'public ' if init_record.get('public_text') else ''}"
                              f"'{init_record['corpus']}'"
                              if init_record and name in ("federated", "centralized",
                                                          "local-only") else ""),
                          **({"keyboard": keyboards[name]} if name in keyboards else {})}
                   for name, score in results.items()},
    }
    if keyboard:
        report["keyboard"] = {
            "rules": "fl_pipeline/evaluation/keyboard_metrics.py", "users": len(messages),
            "heldout_users_with_future": len(heldout_ids),
            "messages": sum(map(len, messages.values())),
            "max_users": keyboard.max_users, "max_messages_per_user": keyboard.max_messages_per_user,
            "seed": keyboard.seed}
    if personalization is not None:
        report["personalization"] = personalization
        keyboard_metrics.plot_personal_gains(*keyboard_metrics.personal_plot_data(personalization),
                                          run_dir / PERSONAL_PLOT)
    if centralized_curve_at and "centralized" in results:
        steps = max(1, summary["examples"] // config.batch_size)
        final = {"examples": steps * config.batch_size, **results["centralized"].to_json()}
        report["models"]["centralized"]["curve"] = [
            point for point in curve if point["examples"] < final["examples"]] + [final]
    write_json(run_dir / EVAL_REPORT, report)
    return report


def _keyboard_messages(store, keyboard: KeyboardEval) -> tuple[dict, dict]:
    """The held-out users' future messages as typed text (the seeded sample, capped), and
    every held-out user's (past, future) messages (the raw texts behind the store)."""
    from fl_pipeline.bench.texts import read_store_texts

    heldout = read_store_texts(store).heldout
    future = keyboard_metrics.sample_messages(
        {user: future for user, (_, future) in heldout.items()}, max_users=keyboard.max_users,
        max_messages_per_user=keyboard.max_messages_per_user, seed=keyboard.seed)
    return future, heldout


def _personalize(keyboard: KeyboardEval, model_dir: Path, shared: Suggester, heldout: dict,
                 work_dir: Path, vocab, show_progress: bool) -> dict:
    started = time.monotonic()
    report = keyboard_metrics.measure_personalization(
        keyboard.personalizer(model_dir, work_dir), shared, heldout, vocab,
        min_past_messages=keyboard.min_past_messages, max_users=keyboard.max_users,
        max_messages_per_user=keyboard.max_messages_per_user, seed=keyboard.seed,
        show_progress=show_progress)
    return {**report, "plot": PERSONAL_PLOT, "seconds": time.monotonic() - started}


def format_table(report: dict) -> str:
    """One table: token metrics, then the keyboard metrics (pooled/mean over users) if any."""
    keyboard = report.get("keyboard")
    lines = [f"held-out clients: {report['heldout_clients']} (scored on their future texts)"]
    if keyboard:
        lines.append(f"keyboard metrics: {keyboard['messages']} future messages of "
                     f"{keyboard['users']} users (at most {keyboard['max_messages_per_user']} "
                     "each), typed by the simulated typist of fl_pipeline/evaluation/keyboard_metrics.py; "
                     "each cell pooled/mean over users")
    header = f"{'model':<12} {'top-1':>6} {'top-3':>6} {'ppl':>8}"
    if keyboard:
        header += "".join(f" {h:>13}" for h in ("strip top-1", "strip top-3", "compl@1 top-3",
                                                 "compl@2 top-3", "KSR")) + "  strip from"
    lines.append(header + "  trained on" if not keyboard else header)
    for name, row in report["models"].items():
        line = (f"{name:<12} {row['top1_accuracy']:>6.3f} {row['top3_accuracy']:>6.3f} "
                f"{row['perplexity']:>8.1f}")
        if keyboard:
            strip = row["keyboard"]
            line += "".join(f" {_pair(strip, f):>13}" for f in keyboard_metrics.FIGURES)
            line += f"  {strip['suggester']}"
        else:
            line += f"  {row['description']}"
        lines.append(line)
    if keyboard:
        lines += ["", "trained on:"] + [f"  {name:<12} {row['description']}"
                                        for name, row in report["models"].items()]
    if "personalization" in report:
        lines += ["", keyboard_metrics.format_personalization(report["personalization"])]
    return "\n".join(lines)


def _pair(strip: dict, figure: str) -> str:
    def show(value):
        return "-" if value is None else f"{value:.3f}"
    return f"{show(strip['pooled'][figure])}/{show(strip['user_mean'][figure])}"
