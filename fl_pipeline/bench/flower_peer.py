"""FedKB's TFF round against the same round in Flower's simulation engine (issue 14).

    .venv/bin/python -m fl_pipeline.bench.flower_peer tff [DATA_DIR] [--out runs/flower]
    runs/flower-env/bin/python -m fl_pipeline.bench.flower_peer flower [--out runs/flower]

Flower is the framework people weigh FedKB against, so the issue sets a goal: a
FedKB round at most 0.8x the best Flower configuration's, on tiny clients and on
clients with 64 windows. Flower 1.23 with its simulation engine (Ray) cannot live
in FedKB's environment (it pins other versions of grpcio and protobuf than TFF
0.87), so the comparison runs in two halves that share a folder:

- `tff` (FedKB's environment): for each setting, the rounds' clients drawn by the
  seeded sampler FedKB's runs use, their batches (`to_model_batches`, the pipeline
  TFF's dataset computation runs) saved to `OUT/<setting>.npz`, then those rounds
  timed in FedKB's TFF process and in the plain loop (`speed.tff_rounds`,
  `speed.plain_rounds`); `OUT/tff.json`.
- `flower` (an environment with `flwr[simulation]==1.23.0` and `tensorflow==2.14.1`;
  run from the checkout so that `models/` imports): the same rounds in
  `flwr.simulation.run_simulation` with FedAdam at FedKB's server settings, each
  Ray worker keeping one Keras model (`models.next_word.build_model`) and taking
  the saved batches of its (round, client) through the same SGD steps, once with
  1 CPU per client and once with Flower's default resources; `OUT/flower.json`, and
  the table of both.

The first round of each is tracing and warm-up, and not timed. Settings (10 phones
each): `demo`, the round `make demo` trains (at most 16 windows, one epoch in batches
of 8: tiny clients), and `64`, the training defaults' round (64 windows, 2 epochs in
batches of 16) on phones that hold 64 windows.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import os
import sys
import time
from pathlib import Path

import numpy as np

from datasets.layout import demo_paths

TFF_REPORT = "tff.json"
FLOWER_REPORT = "flower.json"
DEFAULT_OUT = Path("runs/flower")
GOAL = 0.8  # issue 14: FedKB's round at most 0.8x Flower's best
RESOURCES = {"1 CPU per client": {"num_cpus": 1, "num_gpus": 0.0},
             "Flower's default resources": None}


# ---- FedKB's half (TFF environment) -----------------------------------------------------

def settings() -> dict:
    """Each setting's training config: `make demo`'s phones (at most 16 windows, batches of 8)
    in issue 14's round of 10, and the training defaults' with phones that fill 64 windows."""
    from fl_pipeline.cli.demo import CHITCHAT_TRAINING
    from fl_pipeline.config import TrainConfig

    return {"demo": dataclasses.replace(CHITCHAT_TRAINING, clients_per_round=10),
            "64": TrainConfig(max_examples_per_client=64, local_epochs=2)}


def tff_half(data_dir: Path, out: Path, rounds: int) -> dict:
    """Saves each setting's rounds (client batches) and times them in TFF and the plain loop."""
    from datasets.store import ClientStore
    from fl_pipeline.bench import speed
    from fl_pipeline.training.client_data import to_model_batches
    from models.next_word import ModelConfig

    store = ClientStore(data_dir)
    model_config = ModelConfig(vocab_size=len(store.vocab), seq_len=store.seq_len)
    client_data = store.client_data("train")
    out.mkdir(parents=True, exist_ok=True)
    report = {"data": str(data_dir), "rounds": rounds, "model": dataclasses.asdict(model_config),
              "settings": {}}
    for name, train in settings().items():
        pool = [c for c in store.client_ids("train")
                if name == "demo" or store.num_examples("train", c) >= train.max_examples_per_client]
        if len(pool) < train.clients_per_round:
            print(f"{name}: skipped, only {len(pool)} phones hold {train.max_examples_per_client} "
                  f"windows ({train.clients_per_round} needed)", flush=True)
            continue
        cohorts = speed.seeded_cohorts(pool, train, rounds)
        arrays, examples = {}, []
        for r, cohort in enumerate(cohorts):
            examples.append(0)
            for c, client_id in enumerate(cohort):
                batches = to_model_batches(client_data.create_tf_dataset_for_client(client_id),
                                           batch_size=train.batch_size, epochs=train.local_epochs,
                                           max_examples=train.max_examples_per_client,
                                           shuffle_seed=train.seed)
                for b, (x, y) in enumerate(batches):
                    arrays[f"r{r}_c{c}_b{b}_x"], arrays[f"r{r}_c{c}_b{b}_y"] = x.numpy(), y.numpy()
                    examples[-1] += len(x)
        np.savez_compressed(out / f"{name}.npz", **arrays)
        tff_log = speed.tff_rounds(store, model_config, train, cohorts)
        plain_log = speed.plain_rounds(store, model_config, train, cohorts)
        if tff_log.examples != examples:  # the saved rounds must be the rounds TFF trained
            raise RuntimeError(f"TFF trained {tff_log.examples} examples per round, the saved "
                               f"rounds hold {examples}")
        report["settings"][name] = {
            "train": train.to_json(), "clients_per_round": train.clients_per_round,
            "examples_per_round": tff_log.examples,
            "tff_round_s": tff_log.seconds, "plain_round_s": plain_log.seconds,
            "pool_clients": len(pool)}
        print(f"{name}: TFF round {_median(tff_log.seconds):.2f} s, plain loop "
              f"{_median(plain_log.seconds):.2f} s ({rounds - 1} timed rounds)", flush=True)
    (out / TFF_REPORT).write_text(json.dumps(report, indent=1), "utf-8")
    return report


def _median(seconds: list[float]) -> float:
    """Median round time without the first (tracing, warm-up) round."""
    return statistics.median(seconds[1:])


# ---- Flower's half (Flower environment) --------------------------------------------------

_WORKER = {}  # per Ray worker process: the Keras model, its SGD step and the loaded rounds


def _worker_state(npz: Path, model: dict, client_lr: float):
    """One Keras model, its traced SGD step and the saved batches, built once per worker."""
    if _WORKER.get("npz") != npz:
        import tensorflow as tf

        from models.next_word import ModelConfig, build_model
        from models.train_step import train_step

        keras_model = build_model(ModelConfig(**model))
        step = train_step(keras_model, tf.keras.optimizers.SGD(client_lr))
        _WORKER.update(npz=npz, model=keras_model, step=step, arrays=dict(np.load(npz)))
    return _WORKER


def flower_round_times(npz: Path, report: dict, setting: str, resources: dict | None) -> list[float]:
    """Runs the saved rounds of `setting` in Flower's simulation engine; seconds per round."""
    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAdam

    from models.next_word import ModelConfig, build_model

    model, settings = report["model"], report["settings"][setting]
    train = settings["train"]
    clients = settings["clients_per_round"]
    initial = build_model(ModelConfig(**model), seed=train["seed"]).get_weights()

    class SavedBatchesClient(NumPyClient):
        def __init__(self, partition: int):
            self.partition = partition

        def fit(self, parameters, config):
            worker = _worker_state(npz, model, train["client_lr"])
            keras_model, arrays = worker["model"], worker["arrays"]
            keras_model.set_weights(parameters)
            prefix, examples, b = f"r{int(config['round']) - 1}_c{self.partition}_b", 0, 0
            while f"{prefix}{b}_x" in arrays:
                x = arrays[f"{prefix}{b}_x"]
                worker["step"](x, arrays[f"{prefix}{b}_y"])
                examples, b = examples + len(x), b + 1
            return keras_model.get_weights(), examples, {}

    def client_fn(context):
        return SavedBatchesClient(int(context.node_config["partition-id"])).to_client()

    class TimedFedAdam(FedAdam):
        """FedAdam that records each round from sending the model to the aggregated update."""

        def __init__(self, **settings):
            super().__init__(**settings)
            self.seconds: list[float] = []

        def configure_fit(self, server_round, parameters, client_manager):
            self._started = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            if failures:
                raise RuntimeError(f"Flower round {server_round}: {len(failures)} client(s) failed: "
                                   f"{failures[0]!r}")
            aggregated = super().aggregate_fit(server_round, results, failures)
            self.seconds.append(time.perf_counter() - self._started)
            return aggregated

    strategy = TimedFedAdam(
        fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients,
        fraction_evaluate=0.0, min_evaluate_clients=0,
        initial_parameters=flwr.common.ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda server_round: {"round": server_round},
        eta=train["server_lr"], eta_l=train["client_lr"], beta_1=0.9, beta_2=0.999, tau=1e-5)
    server_app = ServerApp(server_fn=lambda context: ServerAppComponents(
        strategy=strategy, config=ServerConfig(num_rounds=report["rounds"])))
    backend = {"client_resources": resources} if resources else None
    flwr.simulation.run_simulation(server_app=server_app, client_app=ClientApp(client_fn=client_fn),
                                   num_supernodes=clients, backend_config=backend)
    if len(strategy.seconds) != report["rounds"]:
        raise RuntimeError(f"Flower ran {len(strategy.seconds)} of {report['rounds']} rounds")
    return strategy.seconds


def flower_half(out: Path) -> dict:
    """Times every setting in Flower with each resource choice; writes flower.json."""
    import flwr

    # Ray's workers import this module and models/: the checkout goes on their path.
    checkout = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
    report = json.loads((out / TFF_REPORT).read_text("utf-8"))
    flower = {"flwr": flwr.__version__, "settings": {}}
    for setting in report["settings"]:
        flower["settings"][setting] = {
            label: flower_round_times((out / f"{setting}.npz").resolve(), report, setting, resources)
            for label, resources in RESOURCES.items()}
    (out / FLOWER_REPORT).write_text(json.dumps(flower, indent=1), "utf-8")
    print(table(report, flower))
    return flower


def table(report: dict, flower: dict) -> str:
    """Median round seconds of each framework per setting, and FedKB's over Flower's best."""
    lines = ["| setting | FedKB TFF round | plain loop | " + " | ".join(f"Flower, {r}" for r in RESOURCES)
             + f" | TFF / best Flower (goal ≤ {GOAL}) |", "|---" * (4 + len(RESOURCES)) + "|"]
    for setting, timed in report["settings"].items():
        ours = _median(timed["tff_round_s"])
        theirs = {label: _median(s) for label, s in flower["settings"][setting].items()}
        ratio = ours / min(theirs.values())
        lines.append(f"| {setting} | {ours:.2f} s | {_median(timed['plain_round_s']):.2f} s | "
                     + " | ".join(f"{theirs[r]:.2f} s" for r in RESOURCES)
                     + f" | {ratio:.2f}x: {'met' if ratio <= GOAL else 'missed'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fl_pipeline.bench.flower_peer",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="half", required=True)
    tff = sub.add_parser("tff", help="save the rounds and time them in FedKB (FedKB's .venv)")
    tff.add_argument("data", type=Path, nargs="?", default=demo_paths()[0],
                     help="a `fedkb data prepare` directory (default: make demo's, %(default)s)")
    tff.add_argument("--rounds", type=int, default=6, help="rounds per setting, the first untimed")
    flower = sub.add_parser("flower", help="time the saved rounds in Flower (a Flower env)")
    for half in (tff, flower):
        half.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.half == "tff":
        if args.rounds < 2:
            parser.error("--rounds must be at least 2 (the first is not timed)")
        from datasets.errors import FedKBError

        try:
            tff_half(args.data, args.out, args.rounds)
        except FedKBError as error:  # e.g. no prepared data there
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        if not (args.out / TFF_REPORT).exists():
            print(f"error: {args.out / TFF_REPORT} not found; run the `tff` half first "
                  f"(.venv/bin/python -m fl_pipeline.bench.flower_peer tff --out {args.out})",
                  file=sys.stderr)
            return 2
        # By its importable name, not as __main__: Ray's workers then import this module
        # (pickled by reference), so `_WORKER` keeps each worker's model across rounds.
        importlib.import_module("fl_pipeline.bench.flower_peer").flower_half(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
