"""What each `fedkb` subcommand does, given its parsed arguments.

Thin on purpose: each handler imports the module that does the work (lazily,
so light commands stay light) and prints the result.
"""

from __future__ import annotations

import argparse
import dataclasses

from datasets.errors import FedKBError
from datasets.layout import fedkb_command, venv_command
from fl_pipeline.config import EVAL_MODELS, TrainConfig
from fl_pipeline.run_dir import AUDIT_REPORT, EVAL_REPORT, load_run_config


def run_data(args: argparse.Namespace) -> int:
    """`fedkb data prepare` writes a client store; `fedkb data stats` prints one's stats."""
    import sys

    from datasets.stats import format_stats

    if args.data_command == "stats":
        from datasets.store import ClientStore

        print(format_stats(ClientStore(args.data_dir).stats))
        return 0
    from datasets.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        corpus=args.corpus, out=args.out, vocab_size=args.vocab_size,
        vocab_from_data=args.vocab_from_data, include_offensive=args.include_offensive,
        heldout_fraction=args.heldout_fraction, past_fraction=args.past_fraction,
        seq_len=args.seq_len, max_clients=args.max_clients,
        skip_bad_lines=args.skip_bad_lines, seed=args.seed, canaries=args.canaries or 0,
        canary_repeats=args.canary_repeats, canary_digits=args.canary_digits,
        max_texts_per_client=None if args.no_caps else args.max_texts_per_client,
        max_future_texts=None if args.no_caps else args.max_future_texts, pack=args.pack)
    result = prepare(config, force=args.force)
    if result.warning:
        print(f"fedkb data: warning: {result.warning}", file=sys.stderr)
    print(format_stats(result.stats))
    canaries = ", canaries.json" if result.stats.get("canaries") else ""
    print(f"\nwrote {args.out}/ (clients.sqlite, vocab.json, stats.json{canaries})")
    return 0


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, overridden by the flags the user gave."""
    # Every TrainConfig field has a flag of the same name (parser.py); unset ones stay None.
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
                 if field.name != "workers" and getattr(args, field.name, None) is not None}
    if args.workers:
        overrides["workers"] = tuple(w.strip() for w in args.workers.split(",") if w.strip())
    try:
        return TrainConfig(**overrides)
    except ValueError as e:
        raise FedKBError(str(e).replace("TrainConfig.", "--").replace("_", "-")) from None


def run_train(args: argparse.Namespace) -> int:
    from fl_pipeline.training import run

    if args.resume is not None:
        summary = run.resume(args.resume)
        run_dir = args.resume
    else:
        model = {name: getattr(args, name) for name in ("embedding_dim", "lstm_units")
                 if getattr(args, name) is not None}
        summary = run.train(args.data, args.out, train_config_from_args(args), model,
                            init_from=args.init_from)
        run_dir = args.out
    heldout = summary["final_metrics"]["heldout"]
    print(f"trained {summary['rounds']} rounds on {summary['clients_seen']} of "
          f"{summary['training_clients']} phones in {summary['wall_time_s']:.0f} s; held-out "
          f"top-1 {heldout['top1_accuracy']:.3f}, top-3 {heldout['top3_accuracy']:.3f}")
    participation = summary.get("participation") or {}
    if participation.get("dropout") or participation.get("over_select", 1) > 1:
        print(f"client failures: {participation['failed_clients']} clients dropped out, "
              f"{participation['late_reports_discarded']} late reports discarded, "
              f"{len(participation['skipped_rounds'])} of {summary['rounds']} rounds skipped "
              f"(fewer than {participation['min_reports']} reports)")
    if summary.get("diverged_round_count"):
        print(f"{summary['diverged_round_count']} of {summary['rounds']} rounds diverged and were "
              f"skipped (rounds {', '.join(map(str, summary['diverged_rounds']))})")
    if summary.get("undone_rounds"):
        undone = summary["undone_rounds"]
        print(f"{len(undone)} accepted round{'s' * (len(undone) > 1)} undone: the rounds after "
              f"found the model broken (round{'s' * (len(undone) > 1)} "
              f"{', '.join(map(str, undone))})")
    if summary["dp"]:
        print(f"differential privacy: epsilon {summary['dp']['epsilon']:.2f} "
              f"at delta {summary['dp']['delta']:.1e}")
    if summary.get("init"):
        print(summary["init"]["statement"])
    print(f"run directory: {run_dir}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from fl_pipeline.training.pretrain import PretrainConfig, pretrain

    try:
        config = PretrainConfig(examples=args.examples, batch_size=args.batch_size,
                                learning_rate=args.lr, seed=args.seed,
                                unigram_bias=args.unigram_bias)
    except ValueError as e:
        raise FedKBError(str(e)) from None
    model = {name: getattr(args, name) for name in ("embedding_dim", "lstm_units")
             if getattr(args, name) is not None}
    summary = pretrain(args.public, args.out, config, model, for_data=args.for_data)
    heldout = summary["heldout_of_public_store"]
    print(f"pretrained on public '{summary['corpus']}' ({summary['training_clients']} clients, "
          f"{summary['examples']} example passes) in {summary['wall_time_s']:.0f} s; its held-out "
          f"top-3 {heldout['top3_accuracy']:.3f}")
    print(f"wrote {args.out}; start federated training from it with "
          f"`{fedkb_command('train', '--init-from', args.out)}`")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    models = args.models or EVAL_MODELS
    if args.personalize and "federated" not in models:
        raise FedKBError("--personalize personalizes the federated model: add federated to "
                         "--models, or leave --personalize out")
    load_run_config(args.run_dir)  # a bad run directory is refused before TensorFlow loads
    from fl_pipeline.evaluation.compare import KeyboardEval, compare, format_table
    # The one place the server side meets the device: the exported models are judged as
    # keyboards by the app's own LiteRT predictor (fl_pipeline itself never imports keyboard_app).
    from keyboard_app.personal import personalizer
    from keyboard_app.predictor import Predictor

    keyboard = KeyboardEval(Predictor, max_users=args.keyboard_users,
                            max_messages_per_user=args.keyboard_messages, seed=args.keyboard_seed,
                            personalizer=personalizer if args.personalize else None,
                            min_past_messages=args.personal_min_past)
    print(format_table(compare(args.run_dir, keyboard=keyboard, models=models)))
    print(f"written to {args.run_dir / EVAL_REPORT}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    import json

    from fl_pipeline.export import export_run

    out = export_run(args.run_dir, args.out, quantize=not args.float32, progress=True)
    card = json.loads((out / "model_card.json").read_text("utf-8"))
    print(f"wrote {out}: model.tflite {card['file']['bytes'] / 1e6:.2f} MB "
          f"({card['file']['quantization']}), vocab {card['vocab']['size']}, "
          f"context {card['model']['context_len']} tokens, train batch "
          f"{card['personal_layer']['train_batch_size']}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from keyboard_app.predictor import Predictor  # LiteRT only, no TensorFlow

    for word in Predictor(args.model).suggest(args.text, k=args.k):
        print(word)
    return 0


def run_app(args: argparse.Namespace) -> int:
    from keyboard_app.app import has_display, run_app as open_app  # Kivy + LiteRT, no TensorFlow

    if not has_display():
        raise FedKBError("no display to open the app window on (DISPLAY is not set); run it on a "
                         "desktop, or on a virtual one: xvfb-run -a -s \"-screen 0 1280x720x24 "
                         f"+extension GLX\" {fedkb_command('app', '--model', args.model)}")
    return open_app(args.model, args.user_dir)


def run_audit(args: argparse.Namespace) -> int:
    from fl_pipeline.evaluation.audit import audit_run, format_exposure_table

    report = audit_run(args.run_dir, args.data, progress=True)
    print(format_exposure_table(report))
    print(f"written to {args.run_dir / AUDIT_REPORT}")
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from fl_pipeline.training.runtime import serve_forever

    return serve_forever(args.port)


def run_bench(args: argparse.Namespace) -> int:
    """`fedkb bench`: quality, speed, size and communication in bench.json, REPORT.md and plots."""
    from fl_pipeline.bench.config import BenchConfig
    from fl_pipeline.bench.report import HEADLINE, figure_table
    from fl_pipeline.bench.runner import run_bench as bench

    result = bench(BenchConfig.full() if args.full else BenchConfig.quick(), args.out,
                   federated_run=args.federated_run)
    figures = result["figures"]
    print("\n".join(figure_table(figures, [n for n in HEADLINE if n in figures], with_how=False)))
    print(f"\n{result['wall_time_s'] / 60:.1f} minutes; wrote {args.out / 'bench.json'}, "
          f"{args.out / 'REPORT.md'} and plots; refresh the README's results with: "
          f"{venv_command('python', '-m', 'fl_pipeline.bench.report', '--update-readme', args.out / 'bench.json')}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from fl_pipeline.cli.demo import is_tiny, next_commands, run_demo as demo
    from keyboard_app.app import has_display, run_app as open_app

    model_dir = demo(args.out, tiny=is_tiny(), corpus=args.corpus, warm_start=args.warm_start)
    if not args.no_app and has_display():
        return open_app(model_dir, None)
    print(f"model: {model_dir}" if args.no_app else
          f"no display, so the app does not open; model: {model_dir}")
    for what, command in next_commands(args.out):
        print(f"  {what}: {command}")
    return 0
