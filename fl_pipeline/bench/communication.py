"""Communication: what phones upload in federated training, against the raw text
that centralized training would have collected from them.

- Bytes one client uploads per round, without and with `--compress`: the
  `upload_bytes_per_client_per_round` of real runs' summary.json (the
  encoded size of a model update, `fl_pipeline.privacy.upload_bytes`).
- The whole federated run's upload (rounds x clients per round x bytes per
  update) against the raw UTF-8 text of the clients it sampled, and of all
  training clients (`stats.json` `splits.train.utf8_bytes`).
"""

from __future__ import annotations

from fl_pipeline.bench.figures import Figures
from fl_pipeline.bench.texts import StoreTexts
from fl_pipeline.client_data import SeededClientIterator
from fl_pipeline.config import TrainConfig


def clients_sampled(train_ids: list[str], train: TrainConfig) -> set[str]:
    """The clients a run with these settings sampled (the same seeded sampler as training)."""
    sampler = SeededClientIterator(train_ids, train.seed)
    seen: set[str] = set()
    for _ in range(train.rounds):
        seen.update(sampler.select(min(train.clients_per_round, len(train_ids))))
    return seen


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
                "(float32 model update + its weight)", sizes=sizes)
    figures.add("communication.upload_per_client_round_compressed",
                "upload per client per round, --compress",
                compressed_summary["upload_bytes_per_client_per_round"], "bytes",
                f"summary.json of a {compressed_summary['rounds']}-round `fedkb train --compress` "
                "run (tff.learning.compression_aggregator: 8-bit values for tensors above "
                "20,000 values)", sizes={**sizes, "rounds": compressed_summary["rounds"]})
    figures.ratio("communication.compressed_over_plain", "--compress / plain upload",
                  "communication.upload_per_client_round_compressed",
                  "communication.upload_per_client_round")

    seen = clients_sampled(train_ids, train)
    run_sizes = {**sizes, "clients_seen": len(seen), "training_clients": len(train_ids)}
    figures.add("communication.run_upload", "upload of the whole federated run",
                summary["upload_bytes_per_client_per_round"] * summary["rounds"]
                * summary["clients_per_round"], "bytes",
                "upload per client per round x rounds x clients per round", sizes=run_sizes)
    figures.add("communication.raw_text_seen", "raw text of the clients the run sampled",
                texts.utf8_bytes(seen), "bytes",
                "UTF-8 bytes of the sampled clients' texts (corpus read again with the store's "
                "settings; the same seeded sampler as training)", sizes=run_sizes)
    figures.add("communication.raw_text_all_training", "raw text of all training clients",
                all_text, "bytes", "stats.json splits.train.utf8_bytes (what centralized "
                "training collects)", sizes=run_sizes)
    figures.ratio("communication.run_upload_over_raw_text_seen",
                  "federated upload / raw text of the same clients",
                  "communication.run_upload", "communication.raw_text_seen", sizes=run_sizes)
