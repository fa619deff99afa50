"""Keyboard quality against training minutes: when does federated overtake counting?

    .venv/bin/python -m fl_pipeline.bench.minutes DATA_DIR [--minutes 6] [--out runs/minutes]

The demo's budget is minutes of training on 2 cores (issue 14 §3), so this is the figure
that says what the budget buys, on one prepared store (`fedkb data prepare`):

- federated: FedKB's real TFF training process (`fl_pipeline.training.learning_process`,
  `make demo`'s settings: 5 phones a round, at most 16 windows each in batches of 8), round
  after round in FedKB's execution context, from the seeded random model;
- centralized: the same model and seed on the pooled text of the same training clients
  (Adam, the same batch size; `models.train_step`, as `fedkb eval`'s centralized model);
- n-gram: the Kneser-Ney trigram on the pooled text, counted once (its x is its counting time).

The clock counts training only: it stops while a model is scored. At each of `points`
evenly spaced marks up to `minutes`, the model as it stands types a seeded sample of the
held-out users' future messages (the simulated typist of `keyboard_metrics`: strip top-3
and KSR, pooled; the Keras model behind the app's `Suggester` rules, which the exported
TFLite model matches). A step that passes several marks scores once for all of them.

Minutes are wall-clock minutes on this machine, so run it alone: whatever else runs
slows the training, not the n-gram's fixed counting. Writes OUT/minutes.json and
OUT/minutes.png (strip top-3 and KSR against minutes, one line per model).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from fl_pipeline.cli.demo import CHITCHAT_TRAINING
from fl_pipeline.config import TrainConfig
from models.config import ModelConfig

MINUTES_REPORT = "minutes.json"
MINUTES_PLOT = "minutes.png"
FIGURES = ("next_top3", "ksr")  # strip top-3 and keystroke savings


@dataclass(frozen=True)
class MinutesConfig:
    """How long each model trains, how often it is scored, and on which messages."""

    minutes: float = 6.0  # training minutes per model (the demo's budget: 6)
    points: int = 6  # scored at minutes * i / points, i = 1..points
    users: int = 30  # held-out users typed (a seeded sample) ...
    messages_per_user: int = 20  # ... each with this many of their future messages at most
    train: TrainConfig = CHITCHAT_TRAINING  # the federated process: make demo's
    centralized_lr: float = 2e-3  # Adam, as fedkb eval's centralized model

    def __post_init__(self):
        if not self.minutes > 0 or self.points < 1:
            raise ValueError(f"minutes must be positive and points at least 1, got "
                             f"{self.minutes} and {self.points}")

    def marks(self) -> list[float]:
        """Training seconds at which the models are scored."""
        return [60 * self.minutes * i / self.points for i in range(1, self.points + 1)]


def train_and_score(steps: Iterator[int], marks: list[float], score: Callable[[], dict],
                    clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Runs `steps` (each yields the examples it trained) until the last mark's training time,
    stopping the clock while `score()` runs; one point per mark: {minutes, examples, **score}."""
    points, examples, trained = [], 0, 0.0
    pending = list(marks)
    while pending:
        started = clock()
        examples += next(steps)
        trained += clock() - started
        if trained >= pending[0]:
            scored = score()
            while pending and trained >= pending[0]:
                points.append({"minutes": trained / 60, "examples": examples, **scored})
                pending.pop(0)
    return points


def crossover(points: list[dict], reference: float, figure: str = "next_top3") -> float | None:
    """The training minutes of the first point at or above `reference` (None: never)."""
    return next((p["minutes"] for p in points if p[figure] >= reference), None)


def _federated_rounds(store, model_config: ModelConfig, train: TrainConfig,
                      models: list) -> Iterator[int]:
    """FedKB's TFF process, one round per step, from the seeded random model; after each,
    the global weights are in `models[0]` (a Keras model built after TFF traced its own:
    one built before would be left in an invalid state by the tracing)."""
    import tensorflow_federated as tff

    from fl_pipeline.training.client_data import SeededClientIterator
    from fl_pipeline.training.learning_process import build_training_process
    from fl_pipeline.training.program import find_metric
    from models.next_word import build_model

    process = build_training_process(model_config, train, store.client_data("train"))
    model = build_model(model_config, seed=train.seed)
    models.append(model)
    train_ids = store.client_ids("train")
    sampler = SeededClientIterator(train_ids, train.seed)
    loop = asyncio.new_event_loop()  # FedKB's native context invokes inside a running loop

    def call(computation, *args):
        async def materialized():
            return await tff.program.materialize_value(computation(*args))
        return loop.run_until_complete(materialized())

    state = call(process.initialize)
    state = call(process.set_model_weights, state,
                 tff.learning.models.ModelWeights.from_model(model))
    while True:
        clients = sampler.select(min(train.clients_per_round, len(train_ids)))
        output = call(process.next, state, clients)
        state = output.state
        state.global_model_weights.assign_weights_to(model)  # materialized: numpy arrays
        yield int(find_metric(output.metrics, "num_examples"))


def _centralized_steps(store, train: TrainConfig, model, learning_rate: float) -> Iterator[int]:
    """Adam on the pooled, shuffled training windows, one batch per step."""
    import tensorflow as tf

    from models.train_step import train_step
    from fl_pipeline.training.client_data import to_model_batches

    pooled = store.client_data("train").create_tf_dataset_from_all_clients(seed=train.seed)
    batches = to_model_batches(pooled.shuffle(10_000, seed=train.seed).repeat(),
                               batch_size=train.batch_size)
    step = train_step(model, tf.keras.optimizers.Adam(learning_rate))
    for x, y in batches:
        step(x, y)
        yield int(x.shape[0])


def quality_over_minutes(data_dir: Path, config: MinutesConfig,
                         model_config: ModelConfig | None = None,
                         show_progress: bool = True) -> dict:
    """The three models' keyboard figures along their training minutes (see the module)."""
    from fl_pipeline.run_dir import open_store

    store = open_store(data_dir)  # a bad directory is refused before TensorFlow loads

    import tensorflow as tf
    from tqdm.auto import tqdm

    from fl_pipeline.bench.texts import read_store_texts
    from fl_pipeline.evaluation import keyboard_metrics
    from fl_pipeline.evaluation.baselines import KneserNeyTrigram
    from fl_pipeline.training.runtime import federated_context
    from models.next_word import build_model

    vocab = store.vocab
    model_config = model_config or ModelConfig(vocab_size=len(vocab), seq_len=store.seq_len)
    heldout = read_store_texts(store).heldout
    messages = keyboard_metrics.sample_messages(
        {user: future for user, (_, future) in heldout.items()}, max_users=config.users,
        max_messages_per_user=config.messages_per_user, seed=config.train.seed)
    T = model_config.seq_len

    def typed(suggester) -> dict:
        tallies = {user: keyboard_metrics.type_messages(suggester, texts, vocab)
                   for user, texts in messages.items()}
        pooled = keyboard_metrics.summarize(tallies)["pooled"]
        return {figure: pooled[figure] for figure in FIGURES}

    def keras_score(models: list) -> Callable[[], dict]:
        predicts = []

        def score():
            if not predicts:  # traced at the first score, once the model exists
                predicts.append(tf.function(lambda x: models[0](x, training=False)))
            return typed(keyboard_metrics.keras_suggester(
                lambda x: predicts[0](x).numpy(), vocab, T))
        return score

    series = {}
    with tqdm(total=2, desc="quality over minutes", unit="model", disable=not show_progress) as bar:
        federated: list = []
        with federated_context(config.train.workers):
            series["federated"] = train_and_score(
                _federated_rounds(store, model_config, config.train, federated), config.marks(),
                keras_score(federated))
        bar.update()
        centralized = [build_model(model_config, seed=config.train.seed)]
        series["centralized"] = train_and_score(
            _centralized_steps(store, config.train, centralized[0], config.centralized_lr),
            config.marks(), keras_score(centralized))
        bar.update()
    started = time.perf_counter()
    windows = [e["tokens"].numpy() for e in
               store.client_data("train").create_tf_dataset_from_all_clients(seed=config.train.seed)]
    trigram = KneserNeyTrigram(model_config.vocab_size).fit(windows)
    counted = time.perf_counter() - started
    ngram = {"minutes": counted / 60, **typed(keyboard_metrics.ngram_suggester(trigram, vocab, T))}
    return {
        "data": str(data_dir),
        "config": {**asdict(config), "train": config.train.to_json()},
        "model": asdict(model_config),
        "typed": {"users": len(messages), "messages": sum(map(len, messages.values()))},
        "series": series,
        "ngram": ngram,
        "federated_overtakes_ngram_at_minutes": crossover(series["federated"], ngram["next_top3"]),
        "centralized_overtakes_ngram_at_minutes": crossover(series["centralized"],
                                                            ngram["next_top3"]),
    }


def plot(report: dict, path: Path) -> None:
    """Strip top-3 and KSR against training minutes; the n-gram as a line from its counting time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ngram = report["ngram"]
    for ax, figure, label in zip(axes, FIGURES, ("strip top-3", "keystroke savings")):
        for name, points in report["series"].items():
            ax.plot([p["minutes"] for p in points], [p[figure] for p in points], marker="o",
                    label=name)
        ax.axhline(ngram[figure], color="gray", linestyle="--",
                   label=f"Kneser-Ney trigram (counted in {60 * ngram['minutes']:.0f} s)")
        ax.set(xlabel="training minutes (this machine)", ylabel=label, title=label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(report: dict) -> str:
    """One row per scored point: model, minutes, example passes, strip top-3, KSR."""
    lines = [f"{'model':<12} {'minutes':>8} {'examples':>9} {'strip top-3':>12} {'KSR':>6}"]
    for name, points in report["series"].items():
        for p in points:
            lines.append(f"{name:<12} {p['minutes']:>8.2f} {p['examples']:>9} "
                         f"{p['next_top3']:>12.3f} {p['ksr']:>6.3f}")
    n = report["ngram"]
    lines.append(f"{'n-gram':<12} {n['minutes']:>8.2f} {'(counted)':>9} {n['next_top3']:>12.3f} "
                 f"{n['ksr']:>6.3f}")
    for name in ("federated", "centralized"):
        at = report[f"{name}_overtakes_ngram_at_minutes"]
        lines.append(f"{name} strip top-3 reaches the n-gram's: "
                     + ("not within these minutes" if at is None else f"after {at:.1f} min"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from datasets.errors import FedKBError
    from fl_pipeline.cli.parser import quiet_native_logs
    from fl_pipeline.run_dir import check_writable, write_json

    quiet_native_logs(verbose=False)

    parser = argparse.ArgumentParser(prog="python -m fl_pipeline.bench.minutes",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared store (fedkb data prepare --out)")
    parser.add_argument("--out", type=Path, default=Path("runs/minutes"),
                        help="where minutes.json and minutes.png go (default: runs/minutes)")
    parser.add_argument("--minutes", type=float, default=MinutesConfig.minutes,
                        help="training minutes per model (default: 6, the demo's budget)")
    parser.add_argument("--points", type=int, default=MinutesConfig.points,
                        help="scored points per model (default: 6)")
    parser.add_argument("--users", type=int, default=MinutesConfig.users,
                        help="held-out users typed (default: 30)")
    args = parser.parse_args(argv)
    try:
        config = MinutesConfig(minutes=args.minutes, points=args.points, users=args.users)
    except ValueError as e:
        parser.error(str(e))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        check_writable(args.out)
        report = quality_over_minutes(args.data, config)
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror}; pass another --out", file=sys.stderr)
        return 2
    except FedKBError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json(args.out / MINUTES_REPORT, report)
    plot(report, args.out / MINUTES_PLOT)
    print(format_table(report))
    print(f"wrote {args.out / MINUTES_REPORT} and {args.out / MINUTES_PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
