"""`fedkb`: the one command-line front door to FedKB.

Only this module parses arguments. Every subcommand imports its heavy
dependencies lazily, so `fedkb --help`, `fedkb predict` and `fedkb app` never
load TensorFlow. Expected failures (bad input files, missing artifacts) are
`FedKBError`s: one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import (BENCH_DIR, DATA_DIR, DEMO_DATA_DIR, DEMO_DIR, DEMO_MODEL_DIR,
                             DEMO_RUN_DIR, MODEL_DIR, PRETRAIN_DIR, RUN_DIR)
from fl_pipeline.config import SERVER_LR_SCHEDULES, SERVER_OPTIMIZERS, TrainConfig, check_eval_models


def quiet_native_logs(verbose: bool) -> None:
    """Silences TensorFlow/TFF/gRPC C++ logging unless --verbose (before TF is imported)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("GLOG_minloglevel", "3")
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def eval_models(text: str) -> tuple[str, ...]:
    try:
        return check_eval_models(name.strip() for name in text.split(",") if name.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text}")
    return values


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedkb",
        description="Federated next-word keyboard: prepare text, train with TFF, export to "
        "TFLite, and type with it in a Kivy app.",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow/TFF native logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="prepare a corpus as federated clients, or show its stats")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = data_commands.add_parser("prepare", help="read a corpus and write the client store")
    prepare.add_argument("--corpus", default="fortunes",
                         help="'fortunes' (built in), 'chitchat' (real typed chat), a .jsonl/.csv "
                         "file, a directory, a TFF .sqlite client-data file, or 'stackoverflow' "
                         "(default: fortunes)")
    prepare.add_argument("--out", type=Path, default=DATA_DIR,
                         help="output directory (default: %(default)s)")
    prepare.add_argument("--force", action="store_true",
                         help="replace the store that --out already holds")
    prepare.add_argument("--vocab-size", type=positive_int, default=10_000,
                         help="words and symbols in the vocabulary (default: %(default)s)")
    prepare.add_argument("--vocab-from-data", action="store_true",
                         help="build the vocabulary from the training clients instead of wordfreq")
    prepare.add_argument("--include-offensive", action="store_true",
                         help="also read the offensive fortune files (names ending in -o)")
    prepare.add_argument("--heldout-fraction", type=fraction, default=0.1,
                         help="share of clients held out from training (default: %(default)s)")
    prepare.add_argument("--past-fraction", type=fraction, default=0.8,
                         help="share of a held-out client's texts that are its past (default: %(default)s)")
    prepare.add_argument("--seq-len", type=positive_int, default=20, help="tokens of context T (default: %(default)s)")
    prepare.add_argument("--max-clients", type=positive_int, default=None,
                         help="keep only this many clients (chosen by the seed)")
    prepare.add_argument("--max-texts-per-client", type=positive_int, default=1_000, metavar="N",
                         help="keep each client's N most recent texts, so a few prolific people "
                         "do not outweigh everyone (default 1000)")
    prepare.add_argument("--max-future-texts", type=positive_int, default=200, metavar="M",
                         help="score each held-out client on at most its first M future texts "
                         "(default 200)")
    prepare.add_argument("--no-caps", action="store_true",
                         help="keep every text (no --max-texts-per-client / --max-future-texts)")
    prepare.add_argument("--pack", choices=("none", "messages"), default="none",
                         help="training windows: one message each (none, default), or a client's "
                         "consecutive messages packed together (messages; see README)")
    prepare.add_argument("--skip-bad-lines", action="store_true",
                         help="warn about and count bad lines instead of stopping")
    prepare.add_argument("--seed", type=int, default=0, help="fixes the split and --max-clients (default: %(default)s)")
    prepare.add_argument("--canaries", type=positive_int, default=None, metavar="N",
                         help="plant N random canary sentences ('my pin number is 4 8 1 5 2') per "
                         "repeat count in training clients, for `fedkb audit` (secrets go to "
                         "canaries.json)")
    prepare.add_argument("--canary-repeats", type=positive_ints, default=(1, 4, 16),
                         metavar="R1,R2,...", help="copies of each canary in its client (default 1,4,16)")
    prepare.add_argument("--canary-digits", type=positive_int, default=5, metavar="D",
                         help="digits of a canary's secret: it is ranked among 10^D (default 5)")
    stats = data_commands.add_parser("stats", help="print clients, texts, tokens and size quantiles")
    stats.add_argument("data_dir", type=Path, nargs="?", default=DEMO_DATA_DIR,
                       help="prepared data directory (default: %(default)s, from `fedkb demo`)")

    pretrain = commands.add_parser(
        "pretrain", help="train the model centrally on PUBLIC text: a warm start for `train`")
    pretrain.add_argument("--public", type=Path, required=True, metavar="DATA_DIR",
                          help="a prepared store of public text (e.g. `data prepare --corpus "
                          "fortunes`); never the phones' corpus")
    pretrain.add_argument("--out", type=Path, default=PRETRAIN_DIR,
                          help="directory to write (default: %(default)s)")
    pretrain.add_argument("--for-data", type=Path, default=None, metavar="DATA_DIR",
                          help="the phones' store: refuse now if it holds the same corpus or "
                          "another vocabulary")
    pretrain.add_argument("--examples", type=positive_int, default=60_000,
                          help="example passes (default: %(default)s)")
    pretrain.add_argument("--batch-size", type=positive_int, default=16)
    pretrain.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    pretrain.add_argument("--unigram-bias", action="store_true",
                          help="start the output bias at wordfreq's (public) log unigram frequencies")
    pretrain.add_argument("--embedding-dim", type=positive_int, default=None)
    pretrain.add_argument("--lstm-units", type=positive_int, default=None)
    pretrain.add_argument("--seed", type=int, default=0)

    train = commands.add_parser("train", help="train the next-word model with federated averaging")
    train.add_argument("--data", type=Path, default=DATA_DIR,
                       help="prepared data directory (default: %(default)s, as `data prepare` writes)")
    train.add_argument("--out", type=Path, default=RUN_DIR,
                       help="run directory to create (default: %(default)s)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue an interrupted run from its last checkpoint")
    train.add_argument("--init-from", type=Path, default=None, metavar="RUN_OR_WEIGHTS",
                       help="start from these weights (a `fedkb pretrain` directory, a run, or "
                       "a .weights.h5 in one) instead of a random model; refused when they were "
                       "trained on the phones' own corpus or another vocabulary")
    def setting(flag: str, help: str = "", **kwargs) -> None:
        """A TrainConfig field as a flag; its help shows the dataclass default, written once."""
        default = getattr(TrainConfig, flag.removeprefix("--").replace("-", "_"))
        train.add_argument(flag, default=None, help=f"{help} (default {default})".lstrip(), **kwargs)

    setting("--rounds", type=positive_int)
    setting("--clients-per-round", type=positive_int)
    setting("--local-epochs", type=positive_int, help="passes over its data per client per round")
    setting("--batch-size", type=positive_int)
    setting("--max-examples-per-client", type=positive_int)
    setting("--client-lr", type=float, help="client SGD learning rate")
    setting("--server-optimizer", choices=SERVER_OPTIMIZERS, help="adam = FedAdam")
    setting("--server-lr", type=float)
    setting("--server-lr-schedule", choices=SERVER_LR_SCHEDULES,
            help="constant, or decay from --server-lr to 0 at the last round")
    setting("--eval-every", type=positive_int, help="evaluate held-out clients every K rounds")
    setting("--eval-clients", type=positive_int, help="held-out clients per evaluation")
    setting("--checkpoint-every", type=positive_int, help="save the program state every K rounds")
    train.add_argument("--embedding-dim", type=positive_int, default=None,
                       help="embedding size, also of the projection and tied output")
    train.add_argument("--lstm-units", type=positive_int, default=None, help="LSTM width")
    train.add_argument("--dp-noise-multiplier", type=float, default=None,
                       help="train with differential privacy (tff.learning.dp_aggregator)")
    train.add_argument("--secure-agg", action="store_true", help="tff.learning.secure_aggregator")
    train.add_argument("--compress", action="store_true",
                       help="smaller uploads: Hadamard-rotated low-bit quantization of the "
                       "server's share of the vocabulary's rows (README: Communication)")
    setting("--compress-bits", type=int, metavar="B",
            help="with --compress: bits per quantized value (0 = float32)")
    setting("--compress-rows", type=float, metavar="FRACTION",
            help="with --compress: share of the vocabulary's rows sent each round (1 = all)")
    train.add_argument("--compress-tff8", action="store_true",
                       help="tff.learning.compression_aggregator (8-bit, about 4x smaller)")
    train.add_argument("--no-update-clipping", dest="clip_updates", action="store_false",
                       help="plain FedAvg: do not bound client updates on the default path "
                       "(tff.learning.robust_aggregator); for comparisons and `fedkb audit`")
    setting("--dropout", type=float, metavar="P",
            help="each sampled client fails mid-round with probability P, simulated and seeded")
    setting("--over-select", type=float, metavar="F",
            help="invite ceil(F x clients-per-round) clients and aggregate the first "
            "clients-per-round to report")
    train.add_argument("--workers", default=None, metavar="HOST:PORT,...",
                       help="run rounds on remote TFF workers started with `fedkb worker`")
    setting("--worker-timeout", type=float, metavar="SECONDS",
            help="stop the run (resumable) when a remote worker is unreachable this long")
    setting("--seed", type=int, help="fixes sampling, initialization and dropouts")

    evaluate = commands.add_parser(
        "eval", help="compare the run with centralized, local-only, n-gram and bigram")
    evaluate.add_argument("run_dir", type=Path, nargs="?", default=DEMO_RUN_DIR,
                          help="run directory (default: %(default)s, from `fedkb demo`)")
    evaluate.add_argument("--keyboard-users", type=positive_int, default=None, metavar="N",
                          help="keyboard metrics on a seeded sample of N held-out users "
                          "(default: all); local-only then trains only their models")
    evaluate.add_argument("--keyboard-messages", type=positive_int, default=200, metavar="M",
                          help="at most M future messages per user for the keyboard metrics "
                          "(default: %(default)s)")
    evaluate.add_argument("--keyboard-seed", type=int, default=0,
                          help="seed of the user sample (default: %(default)s)")
    evaluate.add_argument("--models", type=eval_models, default=None, metavar="NAME,...",
                          help="score only these of federated, centralized, local-only, n-gram, "
                          "bigram (default: all)")
    evaluate.add_argument("--personalize", action="store_true",
                          help="also personalize the federated model on each sampled user's "
                          "past messages on the device (the app's learner) and report the gain "
                          "on their future ones")
    evaluate.add_argument("--personal-min-past", type=positive_int, default=20, metavar="N",
                          help="with --personalize: users with at least N past messages "
                          "(default: %(default)s)")

    export = commands.add_parser("export", help="export a run to a TFLite model directory")
    export.add_argument("run_dir", type=Path, nargs="?", default=DEMO_RUN_DIR,
                        help="run directory (default: %(default)s, from `fedkb demo`)")
    export.add_argument("--out", type=Path, default=MODEL_DIR,
                        help="model directory to write (default: %(default)s)")
    export.add_argument("--float", dest="float32", action="store_true",
                        help="keep float32 weights (default: dynamic-range quantized)")

    predict = commands.add_parser("predict", help="print next-word suggestions for a text")
    predict.add_argument("text", help="the text before the cursor")
    predict.add_argument("--model", type=Path, default=DEMO_MODEL_DIR,
                         help="model directory (default: %(default)s, from `fedkb demo`)")
    predict.add_argument("-k", type=positive_int, default=3, help="number of suggestions (default: %(default)s)")

    app = commands.add_parser("app", help="open the keyboard app")
    app.add_argument("--model", type=Path, default=DEMO_MODEL_DIR,
                     help="model directory (default: %(default)s, from `fedkb demo`)")
    app.add_argument("--user-dir", type=Path, default=None,
                     help="private directory for opt-in learning (default: the app's user_data_dir)")

    worker = commands.add_parser("worker", help="serve TFF computations for `fedkb train --workers`")
    worker.add_argument("--port", type=positive_int, required=True)

    audit = commands.add_parser("audit", help="measure memorization: exposure of the canaries "
                                "planted by `fedkb data prepare --canaries`")
    audit.add_argument("run_dir", type=Path, nargs="?", default=DEMO_RUN_DIR,
                       help="run directory (default: %(default)s, from `fedkb demo`)")
    audit.add_argument("--data", type=Path, default=None,
                       help="the data directory with canaries.json (default: the run's own)")

    bench = commands.add_parser("bench", help="measure quality, speed, size and communication")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="15-35 minutes on 2 cores (default)")
    size.add_argument("--full", action="store_true", help="larger populations and more rounds")
    bench.add_argument("--out", type=Path, default=BENCH_DIR,
                       help="output directory (default: %(default)s)")
    bench.add_argument("--federated-run", type=Path, default=None, metavar="RUN",
                       help="measure this finished run instead of training the federated run: "
                       f"with --quick, `make demo`'s {DEMO_RUN_DIR} (same settings and corpus; "
                       "saves its training time)")

    demo = commands.add_parser("demo", help="prepare, train, export and open the app")
    demo.add_argument("--out", type=Path, default=DEMO_DIR,
                      help="output directory (default: %(default)s)")
    demo.add_argument("--no-app", action="store_true", help="stop after exporting the model")
    demo.add_argument("--corpus", choices=("chitchat", "fortunes"), default="chitchat",
                      help="the phones' text, trained from a random start: chitchat (real typed "
                      "chat; about 9 minutes on 2 cores) or fortunes (quotations; about 12) "
                      "(default: %(default)s)")
    demo.add_argument("--warm-start", action="store_true",
                      help="chitchat only: pretrain on the server on the public fortunes first "
                      "(fedkb pretrain; about 45 minutes on 2 cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_native_logs(args.verbose)
    from fl_pipeline.cli import commands
    from fl_pipeline.training import fault_injection

    fault_injection.install_from_environment()  # test-only; a no-op unless the tests ask

    handler = getattr(commands, f"run_{args.command}")
    try:
        return handler(args) or 0
    except FedKBError as e:
        print(f"fedkb {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedkb {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if "tensorflow_federated" in sys.modules:  # never import TFF just to release it
            from fl_pipeline.training.runtime import release_tff_default_context

            release_tff_default_context()
