"""Each way of training, side by side: what it buys (a keyboard's quality) and what it
costs (bytes each phone sends, what the server ever holds, ε) (issue 16).

Rows: centralized (every phone uploads its raw text once), federated float32,
federated `--compress`, federated with DP (one row per noise multiplier), and
local-only (nothing moves). Quality is the keyboard's: strip top-3 and KSR of
each model typed the same way (`quality.keyboard_eval`). The federated
variants are compared at equal rounds: the `short_rounds` runs, and the
float32 row of that length (the bench's federated run itself when it is that
long). Centralized and local-only come from the bench's five-model table, so
they had the federated run's example passes.

Bytes are the runs' measured ones (`summary.json` `communication`): per phone,
the run's upload over the phones whose updates it carried; DP runs are not
measured (their aggregator reports no bytes) and say so. Centralized's are
the UTF-8 size of the phones' text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fl_pipeline.bench.communication import clients_uploaded
from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.bench.figures import Budget, Figures
from fl_pipeline.bench.quality import keyboard_eval, keyboard_how
from fl_pipeline.evaluation.compare import compare
from fl_pipeline.run_dir import SUMMARY, load_run_config, read_json

TABLE = "strategies"
# Issue 16's goal for --compress's quality, at the same rounds as the float32 run (its upload
# goal sits on communication.compressed_over_plain).
QUALITY_GOAL = Budget(">=", 0.98, "issue 16 goal: strip top-3 at most 2% below float32")


@dataclass(frozen=True)
class FederatedRun:
    key: str  # the figures' name part
    label: str
    run_dir: Path
    server_holds: str


def federated_row(run: FederatedRun, report: dict | None, config: BenchConfig,
                  train_ids: list[str], figures: Figures) -> dict:
    """Types the run's final model (exported, on LiteRT; unless `report` has it typed already)
    and records its measured upload."""
    if report is None:
        report = _typed(run.run_dir, config)
    summary = read_json(run.run_dir / SUMMARY)
    _, train, _ = load_run_config(run.run_dir)
    sizes = {"rounds": summary["rounds"], "clients_per_round": summary["clients_per_round"],
             "example_passes": summary["examples"]}
    row = {"key": run.key, "label": run.label, "rounds": summary["rounds"],
           "example_passes": summary["examples"], "server_holds": run.server_holds,
           "epsilon": summary["dp"]["epsilon"] if summary["dp"] else None}
    _quality(row, report["models"]["federated"]["keyboard"]["pooled"], keyboard_how(report),
             sizes, figures)
    upload = summary["communication"]["upload"]
    if upload is None:
        figures.note(f"{run.label}: upload not measured (TFF's DP aggregator reports no bytes; "
                     "each phone sends its clipped float32 update)")
        return row
    phones = len(clients_uploaded(train_ids, train))
    how = f"summary.json communication.upload of {run.run_dir.name} (measured in every round)"
    row["upload_total"] = figures.add(
        f"{TABLE}.{run.key}.upload_total", f"{run.label}: upload, whole run",
        upload["run_bytes"], "bytes", how, sizes=sizes).value
    row["upload_per_phone"] = figures.add(
        f"{TABLE}.{run.key}.upload_per_phone", f"{run.label}: upload per phone",
        upload["run_bytes"] / phones, "bytes", how + f" / the {phones} phones whose updates it "
        "carried", sizes=sizes).value
    row["upload_per_phone_round"] = figures.add(
        f"{TABLE}.{run.key}.upload_per_phone_round", f"{run.label}: upload per phone per round",
        upload["bytes_per_client_per_round"], "bytes", how, sizes=sizes).value
    return row


def _typed(run_dir: Path, config: BenchConfig) -> dict:
    """`fedkb eval --models federated` of a run, typed as the bench types every model."""
    return compare(run_dir, show_progress=False, keyboard=keyboard_eval(config),
                   models=("federated",))


def _quality(row: dict, pooled: dict, how: str, sizes: dict, figures: Figures) -> None:
    for figure, label in (("next_top3", "strip top-3"), ("ksr", "KSR")):
        if pooled[figure] is not None:
            row[figure] = figures.add(f"{TABLE}.{row['key']}.{figure}", f"{row['label']}: {label}",
                                      pooled[figure], "fraction", how, sizes=sizes).value


def compare_strategies(main_run: Path, main_report: dict, runs: list[FederatedRun],
                       config: BenchConfig, store, figures: Figures,
                       other_seeds: list[tuple[Path, Path]] = ()) -> None:
    """The strategy table (`figures.tables["strategies"]`) and issue 16's compression goals.

    `main_report`: the five-model table of the bench's federated run `main_run`.
    `other_seeds`: (float32, --compress) short runs of further seeds; the strip top-3 ratio
    of --compress to float32 is then the median over all seeds, with its range."""
    train_ids = store.client_ids("train")
    raw_text = store.stats["splits"]["train"]["utf8_bytes"]
    passes = {"example_passes": main_report["example_passes"]}
    rows = [_pooled_row("centralized", "centralized", main_report, figures,
                        "every phone's raw text", passes)]
    rows[0]["upload_total"] = figures.add(
        f"{TABLE}.centralized.upload_total", "centralized: upload, all phones' text", raw_text,
        "bytes", "stats.json splits.train.utf8_bytes", sizes={"phones": len(train_ids)}).value
    rows[0]["upload_per_phone"] = figures.add(
        f"{TABLE}.centralized.upload_per_phone", "centralized: upload per phone (its text)",
        raw_text / len(train_ids), "bytes", "stats.json splits.train.utf8_bytes / training phones",
        sizes={"phones": len(train_ids)}).value
    rows += [federated_row(run, main_report if run.run_dir == main_run else None, config,
                           train_ids, figures) for run in runs]
    local = _pooled_row("local_only", "local-only", main_report, figures, "nothing", passes)
    rows.append({**local, "upload_total": 0, "upload_per_phone": 0})
    figures.tables[TABLE] = rows

    rows_by_key = {row["key"]: row for row in rows}
    if not {"compressed", "plain"} <= set(rows_by_key):
        return
    pairs = [(rows_by_key["plain"].get("next_top3"), rows_by_key["compressed"].get("next_top3"))]
    for plain, compressed in other_seeds:
        pairs.append(tuple(_typed(run_dir, config)["models"]["federated"]["keyboard"]["pooled"]
                           ["next_top3"] for run_dir in (plain, compressed)))
    if not all(plain and compressed is not None for plain, compressed in pairs):
        figures.note("--compress / float32 strip top-3 not computed: a float32 run scored 0")
        return
    ratios = [compressed / plain for plain, compressed in pairs]
    figures.timing(f"{TABLE}.compressed_over_plain_next_top3",
                   "--compress / float32 strip top-3, same rounds", ratios, "ratio",
                   f"strip top-3 of the --compress run over the float32 run's, both of "
                   f"{config.short_rounds} rounds; the median over {len(ratios)} seed(s) "
                   f"{list(config.strategy_seeds)}, range = min – max", budget=QUALITY_GOAL)


def _pooled_row(key: str, model: str, report: dict, figures: Figures, holds: str,
                sizes: dict) -> dict:
    """A row whose quality is the five-model table's (centralized, local-only)."""
    row = {"key": key, "label": model, "rounds": None,
           "example_passes": report["example_passes"], "server_holds": holds, "epsilon": None}
    keyboard = report["models"][model]["keyboard"]
    _quality(row, keyboard["pooled"], f"{keyboard_how(report)}; {keyboard['suggester']}",
             sizes, figures)
    return row
