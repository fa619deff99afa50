"""Communication: what phones upload in federated training, against the raw text
that centralized training would have collected from them.

- Bytes one client uploads per round, without and with `--compress`: the
  `upload_bytes_per_client_per_round` of real runs' summary.json, measured
  in every round from the encoded update (`fl_pipeline.training.compression`).
- The whole federated run's measured upload (summary.json
  `communication.upload.run_bytes`) against the raw UTF-8 text of the
  clients whose updates it carried, from the run's round plan (dropouts and
  over-selection included: `run_dir.round_plans`, the plan training followed),
  and of all training clients (`stats.json` `splits.train.utf8_bytes`).
"""

from __future__ import annotations

from fl_pipeline.bench.figures import Budget, Figures
from fl_pipeline.bench.texts import StoreTexts
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import round_plans


def clients_uploaded(train_ids: list[str], train: TrainConfig) -> set[str]:
    """The clients whose updates a run with these settings aggregated, diverged rounds
    included (their updates were sent): failed and late clients' were not."""
    return {client for plan in round_plans(train_ids, train) for client in plan.aggregated}


def communication(summary: dict, compressed_summary: dict, train: TrainConfig, store,
                  texts: StoreTexts, figures: Figures) -> None:
    train_ids = store.client_ids("train")
    all_text = store.stats["splits"]["train"]["utf8_bytes"]
    if texts.utf8_bytes(train_ids) != all_text:
        raise RuntimeError(f"the corpus read again has {texts.utf8_bytes(train_ids)} bytes of "
                           f"training text, the store {all_text}: did the corpus change since "
                           "`fedkb data prepare`?")
    sizes = {"model_parameters": summary["model_parameters"], "rounds": summary["rounds"],
             "clients_per_round": summary["clients_per_round"]}
    figures.add("communication.upload_per_client_round", "upload per client per round",
                summary["upload_bytes_per_client_per_round"], "bytes",
                "summary.json of the federated run: upload_bytes_per_client_per_round "
                "(float32 model update + its weight, measured in every round)", sizes=sizes)
    figures.add("communication.upload_per_client_round_compressed",
                "upload per client per round, --compress",
                compressed_summary["upload_bytes_per_client_per_round"], "bytes",
                f"summary.json of a {compressed_summary['rounds']}-round `fedkb train --compress` "
                f"run ({compressed_summary['compression']}; measured in every round)",
                sizes={**sizes, "rounds": compressed_summary["rounds"]})
    figures.ratio("communication.compressed_over_plain", "--compress / plain upload",
                  "communication.upload_per_client_round_compressed",
                  "communication.upload_per_client_round",
                  budget=Budget("<=", 1 / 20, "issue 16 goal: at most 1/20 of the float32 update"))

    seen = clients_uploaded(train_ids, train)
    upload = summary["communication"]["upload"]
    run_sizes = {**sizes, "clients_seen": len(seen), "training_clients": len(train_ids),
                 "client_rounds": upload["client_rounds"]}
    figures.add("communication.run_upload", "upload of the whole federated run",
                upload["run_bytes"], "bytes",
                "summary.json communication.upload.run_bytes: the bytes measured in every "
                "round, summed", sizes=run_sizes)
    figures.add("communication.raw_text_seen", "raw text of the clients whose updates the run carried",
                texts.utf8_bytes(seen), "bytes",
                "UTF-8 bytes of those clients' texts (corpus read again with the store's "
                "settings; the run's round plan, dropouts and over-selection included)",
                sizes=run_sizes)
    figures.add("communication.raw_text_all_training", "raw text of all training clients",
                all_text, "bytes", "stats.json splits.train.utf8_bytes (what centralized "
                "training collects)", sizes=run_sizes)
    figures.ratio("communication.run_upload_over_raw_text_seen",
                  "federated upload / raw text of the same clients",
                  "communication.run_upload", "communication.raw_text_seen", sizes=run_sizes)
