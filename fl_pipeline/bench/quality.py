"""Quality: how close federated training comes to pooling the data, and what DP
and on-device personalization change.

- Five models on the same held-out clients' `future` texts, with the same
  metrics: `fl_pipeline.evaluation.compare.compare` (federated, centralized,
  local-only, n-gram, bigram), token top-k and, as a keyboard, the strip,
  word completion and keystroke savings of a typist (issue 14).
- Learning curves: held-out top-3 against examples processed. Federated
  from the run's periodic TFF evaluations (`eval_metrics.csv`), centralized
  scored along its training at the same example counts.
- DP: each noise multiplier is a real `fedkb train --dp-noise-multiplier`
  run; its (epsilon, top-3) is set against the run without DP at the same
  round.
- Personalization: held-out chat users' future messages typed with the
  exported model (LiteRT) before and after the app's learner personalized
  it on their past messages (`personalization_gain`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.bench.figures import Budget, Figures
from fl_pipeline.evaluation.compare import KeyboardEval, compare
from fl_pipeline.run_dir import (EVAL_METRICS, SUMMARY, TRAIN_METRICS, metric_column, read_json,
                                 read_metrics_csv)
from fl_pipeline.training import run

MODELS = {"federated": "federated", "centralized": "centralized", "local_only": "local-only",
          "ngram": "n-gram", "bigram": "bigram"}
# The keyboard figures each model gets (models/typist.py's names -> the report's words).
KEYBOARD_FIGURES = {"next_top3": "strip top-3", "complete1_top3": "top-3 after 1 letter",
                    "ksr": "KSR"}
# Issue 14 §3: the federated keyboard against counting and against pooling the text.
KEYBOARD_GOALS = (
    ("ngram", "next_top3", Budget(">=", 1.10, "issue 14 goal: 1.10× the Kneser-Ney trigram")),
    ("ngram", "ksr", Budget(">=", 1.05, "issue 14 goal: 1.05× the Kneser-Ney trigram")),
    ("centralized", "next_top3", Budget(">=", 0.95, "issue 14 goal: 0.95× centralized at "
                                                    "equal example passes")),
    ("bigram", "next_top3", None),
)


def keyboard_eval(config: BenchConfig) -> KeyboardEval:
    """How the bench types every model: the app's own Predictor on exported TFLite files, the
    configured sample of held-out users."""
    from keyboard_app.predictor import Predictor

    return KeyboardEval(Predictor, max_users=config.keyboard_users,
                        max_messages_per_user=config.keyboard_messages, seed=config.seed)


def keyboard_how(report: dict) -> str:
    keyboard = report["keyboard"]
    return (f"`fedkb eval --keyboard-users {keyboard['max_users']} --keyboard-messages "
            f"{keyboard['max_messages_per_user']}`: {keyboard['messages']} future messages of "
            f"{keyboard['users']} held-out users typed by models/typist.py through "
            "suggest(text_before_cursor), pooled")


def federated_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """(examples processed by the end of each evaluated round, held-out top-3 there)."""
    rounds = read_metrics_csv(run_dir / TRAIN_METRICS)
    examples_after = np.cumsum([metric_column(r, "num_examples") for r in rounds])
    evaluations = read_metrics_csv(run_dir / EVAL_METRICS)
    x = [int(examples_after[int(e["round"]) - 1]) for e in evaluations]
    y = [metric_column(e, "top3_accuracy") for e in evaluations]
    return x, y


def compare_models(run_dir: Path, config: BenchConfig, figures: Figures) -> dict:
    """The five-model table (token and keyboard metrics) and both learning curves."""
    fed_x, fed_y = federated_curve(run_dir)
    report = compare(run_dir, show_progress=False, centralized_curve_at=fed_x,
                     keyboard=keyboard_eval(config))
    summary = read_json(run_dir / SUMMARY)
    central = report["models"]["centralized"]["curve"]
    figures.add_series("learning_curve.federated", fed_x, fed_y, "examples processed",
                       "held-out top-3")
    figures.add_series("learning_curve.centralized", [p["examples"] for p in central],
                       [p["top3_accuracy"] for p in central], "examples processed",
                       "held-out top-3")

    tokens = report["models"]["federated"]["tokens"]
    sizes = {"heldout_clients": report["heldout_clients"], "scored_tokens": tokens,
             "example_passes": report["example_passes"], "rounds": summary["rounds"],
             "clients_per_round": summary["clients_per_round"],
             "model_parameters": summary["model_parameters"]}
    how = (f"fl_pipeline.evaluation.compare.compare (`fedkb eval`) on the future texts of "
           f"{report['heldout_clients']} held-out clients ({tokens} next-token targets)")
    keyboard_sizes = {"users": report["keyboard"]["users"],
                      "messages": report["keyboard"]["messages"],
                      "example_passes": report["example_passes"]}
    for name, key in MODELS.items():
        row = report["models"][key]
        for k in (1, 3):
            figures.add(f"quality.{name}.top{k}", f"{key} top-{k} (token)", row[f"top{k}_accuracy"],
                        "fraction", f"{how}; {row['description']}", sizes=sizes)
        for figure, label in KEYBOARD_FIGURES.items():
            value = row["keyboard"]["pooled"][figure]
            if value is None:
                figures.note(f"{key} {label}: nothing typed to score")
                continue
            figures.add(f"quality.keyboard.{name}.{figure}", f"{key} {label}", value, "fraction",
                        f"{keyboard_how(report)}; {row['keyboard']['suggester']}; "
                        f"{row['description']}", sizes=keyboard_sizes)
    for other, goal in (("centralized", Budget(">=", 0.9, "issue 4 goal: at least 90% of "
                                                "centralized top-3 at equal example passes")),
                        ("ngram", Budget(">", 1.0, "issue 4 goal: beats n-gram")),
                        ("local_only", Budget(">", 1.0, "issue 4 goal: beats local-only"))):
        _ratio(figures, f"quality.federated_over_{other}_top3",
               f"federated / {MODELS[other]} top-3 (token)", "quality.federated.top3",
               f"quality.{other}.top3", goal)
    for other, figure, goal in KEYBOARD_GOALS:
        _ratio(figures, f"quality.keyboard.federated_over_{other}_{figure}",
               f"federated / {MODELS[other]} {KEYBOARD_FIGURES[figure]}",
               f"quality.keyboard.federated.{figure}", f"quality.keyboard.{other}.{figure}", goal)
    return report


def _ratio(figures: Figures, name: str, label: str, numerator: str, denominator: str,
           budget: Budget | None) -> None:
    if figures.figures.get(numerator) and figures.figures.get(denominator) and \
            figures.figures[denominator].value > 0:
        figures.ratio(name, label, numerator, denominator, budget=budget)
    else:
        figures.note(f"{label} not computed: a figure is missing or 0")


def dp_effect(data_dir: Path, work_dir: Path, config: BenchConfig, federated_run: Path,
              figures: Figures) -> dict[float, Path]:
    """(epsilon, top-3) of one DP run per noise multiplier, against no DP at the same round;
    returns the runs by noise multiplier."""
    rounds = config.short_rounds
    at_round = {int(e["round"]): e for e in read_metrics_csv(federated_run / EVAL_METRICS)}
    figures.add("quality.dp.no_dp_top3", f"no DP, round {rounds}",
                metric_column(at_round[rounds], "top3_accuracy"), "fraction",
                f"held-out TFF evaluation of the federated run at round {rounds} "
                f"(eval_metrics.csv; weighted FedAvg, no clipping or noise)",
                sizes={"rounds": rounds, "clients_per_round": config.train.clients_per_round})
    epsilons, top3s, runs = [], [], {}
    for noise in config.dp_noise_multipliers:
        runs[noise] = work_dir / f"dp-{noise:g}"
        summary = run.train(data_dir, runs[noise], config.dp_train(noise), config.model,
                            show_progress=False)
        dp = summary["dp"]
        key = "quality.dp.noise_" + f"{noise:g}".replace(".", "p")  # 0.5 -> noise_0p5
        how = (f"summary.json of fl_pipeline.training.run.train with dp_noise_multiplier={noise:g} "
               f"(`fedkb train --dp-noise-multiplier {noise:g}`), {rounds} rounds of "
               f"{summary['clients_per_round']} of {summary['training_clients']} clients")
        sizes = {"noise_multiplier": noise, "rounds": rounds, "delta": dp["delta"],
                 "clients_per_round": summary["clients_per_round"],
                 "training_clients": summary["training_clients"]}
        figures.add(f"{key}.epsilon", f"ε at noise {noise:g} (δ = {dp['delta']:.1e})",
                    dp["epsilon"], "epsilon", how + "; dp_accounting RDP accountant", sizes=sizes)
        top3 = summary["final_metrics"]["heldout"]["top3_accuracy"]
        figures.add(f"{key}.top3", f"top-3 at noise {noise:g}", top3, "fraction",
                    how + "; held-out TFF evaluation", sizes=sizes)
        epsilons.append(dp["epsilon"])
        top3s.append(top3)
    figures.add_series("dp", epsilons, top3s, "epsilon", "held-out top-3")
    return runs


# Issue 15's goals for held-out users with enough past text: pooled relative gains and the
# share of users made worse by more than 1%.
GAIN_GOALS = {"next_top3": 15.0, "ksr": 10.0}
MOST_WORSE = 10.0


def personalization_gain(model_dir: Path, data_dir: Path, work_dir: Path, config: BenchConfig,
                         figures: Figures) -> None:
    """Per-user keyboard figures before and after the app's personalization (issue 15).

    The users: the held-out ones of the bench's store `data_dir` (or of
    `config.personal_prepare_args`' store, if set) with at least `personal_min_past` past
    messages. Before: their future messages (at most
    `personal_max_messages` each) typed with the exported model on LiteRT. After: typed again
    once the app's `PersonalLearner` learned one pass on their past messages ("Personalize
    now", never-worse check included), one user after another.
    """
    from keyboard_app.personal import personalizer
    from keyboard_app.predictor import Predictor

    from datasets.store import ClientStore
    from fl_pipeline.evaluation import keyboard_metrics
    from fl_pipeline.bench.speed import time_prepare
    from fl_pipeline.bench.texts import read_store_texts

    if config.personal_prepare_args:  # another corpus than the model's (else `data_dir`)
        data_dir = work_dir / "personal-data"
        time_prepare(config.personal_prepare_args, data_dir, repetitions=1)
    heldout = read_store_texts(ClientStore(data_dir)).heldout
    shared = Predictor(model_dir)
    private_dir, state_bytes = work_dir / "personal", []
    personalize = personalizer(model_dir, private_dir)

    def personalize_and_weigh(past: list[str]):
        predictor = personalize(past)  # what the user's private directory holds now
        state_bytes.append(sum(path.stat().st_size for path in private_dir.iterdir()))
        return predictor

    gains = keyboard_metrics.measure_personalization(
        personalize_and_weigh, shared, heldout, shared.vocab,
        min_past_messages=config.personal_min_past, max_users=config.personal_max_users,
        max_messages_per_user=config.personal_max_messages, seed=config.seed)
    if not gains["users"]:
        figures.note(f"personalization: no held-out user has {config.personal_min_past} past "
                     "messages and a future one")
        return
    corpus = " ".join(config.personal_prepare_args or config.prepare_args)
    sizes = {"users": gains["users"], "min_past_messages": config.personal_min_past,
             "future_messages": gains["future_messages"]}
    how = (f"`fedkb eval --personalize`'s figures (fl_pipeline.evaluation.keyboard_metrics."
           f"measure_personalization) on the held-out users of `fedkb data prepare {corpus}` with "
           f"at least {config.personal_min_past} past messages ({gains['users']}), at most "
           f"{config.personal_max_messages} future messages each, typed by models/typist.py "
           "with the exported model on LiteRT")
    figures.timing("quality.personalization.state_bytes", "personal state on the device",
                   state_bytes, "bytes", "bytes in the learner's private directory after the "
                   "pass (messages.jsonl, personal_weights.npz when the layer is used, "
                   "state.json), median over users; the user's words are counted from the "
                   "messages at start, not stored", sizes=sizes)
    _, by_past = keyboard_metrics.personal_plot_data(gains)
    for figure, label in (("next_top3", "strip top-3"), ("ksr", "KSR")):
        row = gains["figures"][figure]
        key = f"quality.personalization.{figure}"
        figures.add(f"{key}_before", f"{label} before personalizing", row["before"], "fraction",
                    how, sizes=sizes)
        figures.add(f"{key}_after", f"{label} after personalizing", row["after"], "fraction",
                    how + ", after keyboard_app.personal.personalizer: one PersonalLearner pass "
                    "on the user's past messages (never-worse check included)", sizes=sizes)
        if row["gain"] is None:
            figures.note(f"personalization {label}: no hit before personalizing, no gain")
            continue
        low, high = row["interval_95"]
        figures.add(f"{key}_gain", f"pooled relative {label} gain from personalizing",
                    100 * row["gain"], "%",
                    f"{key}_after / {key}_before - 1; paired bootstrap 95% interval over users "
                    f"{100 * low:+.1f}% to {100 * high:+.1f}% (the range shown; n: the users)",
                    sizes=sizes, min=100 * low, max=100 * high, repetitions=gains["users"],
                    budget=Budget(">=", GAIN_GOALS[figure], "issue 15 goal"))
        figures.add(f"{key}_share_worse", f"users worse by more than 1% in {label}",
                    100 * row["share_worse"], "% of users", "share of the users whose own figure "
                    "dropped by more than 1% relative", sizes=sizes,
                    budget=Budget("<=", MOST_WORSE, "issue 15 goal"))
        gained = [(len(heldout[u][0]), 100 * g) for u, g in row["per_user"].items() if g is not None]
        figures.add_series(f"personalization.{figure}", [x for x, _ in gained],
                           [y for _, y in gained], "past messages", f"user's {label} gain (%)")
        figures.add_series(f"personalization.by_past.{figure}", *by_past[label],
                           "past messages (bucket start)", f"pooled {label} gain (%)")


def memorization(config: BenchConfig, work_dir: Path, figures: Figures) -> None:
    """Secret Sharer exposure of canaries planted in the corpus, with and without DP (issue 8)."""
    if not config.audit_rounds:
        figures.note("memorization audit: only with `fedkb bench --full` (two more training runs "
                     "on a corpus with planted canaries); `fedkb audit RUN_DIR` audits any run")
        return
    from fl_pipeline.evaluation.audit import audit_run, mean_exposure_by_repeats
    from fl_pipeline.bench.speed import time_prepare

    data_dir = work_dir / "canary-data"
    canary_args = ("--canaries", str(config.audit_canaries),
                   "--canary-repeats", ",".join(map(str, config.audit_canary_repeats)),
                   "--canary-digits", str(config.audit_canary_digits))
    time_prepare((config.audit_prepare_args or config.prepare_args) + canary_args, data_dir,
                 repetitions=1)
    for label, noise in (("no_dp", None), ("dp", config.audit_noise_multiplier)):
        run_dir = work_dir / f"audit-{label}"
        summary = run.train(data_dir, run_dir, config.audit_train(noise), config.model,
                            show_progress=False)
        report = audit_run(run_dir, data_dir)
        privacy = (f"DP noise {noise}, epsilon {summary['dp']['epsilon']:.3g}" if noise
                   else "no DP")
        rounds = [row["rounds_in_training"] for row in report["canaries"]]
        figures.add(f"privacy.canary_rounds.{label}", f"rounds that included a canary's client, "
                    f"{privacy}", float(np.mean(rounds)), "rounds",
                    "mean over the canaries of the rounds whose aggregate included the client "
                    "holding it (replayed from the run's seed)",
                    sizes={"rounds": config.audit_rounds, "canaries": len(rounds)})
        for repeats, bits in mean_exposure_by_repeats(report).items():
            figures.add(f"privacy.exposure.{label}.repeats_{repeats}",
                        f"canary exposure, {repeats} copies, {privacy}", bits, "bits",
                        f"fl_pipeline.evaluation.audit.audit_run (`fedkb audit`): mean Secret Sharer exposure "
                        f"of the canaries planted {repeats} times (`fedkb data prepare "
                        f"{' '.join(canary_args)}`), ranked among all "
                        f"{report['candidates']:,} secrets of their format",
                        sizes={"rounds": config.audit_rounds,
                               "clients_per_round": config.train.clients_per_round,
                               "canaries": config.audit_canaries})
