"""What each `fedkb` subcommand does, given its parsed arguments.

Thin on purpose: each handler imports the module that does the work (lazily,
so light commands stay light) and prints the result.
"""

from __future__ import annotations

import argparse

from datasets.errors import FedKBError


def _not_built(name: str):
    def run(args: argparse.Namespace) -> int:
        raise FedKBError(f"`fedkb {name}` is not available in this version yet")

    return run


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
        skip_bad_lines=args.skip_bad_lines, seed=args.seed)
    result = prepare(config)
    if result.warning:
        print(f"fedkb data: warning: {result.warning}", file=sys.stderr)
    print(format_stats(result.stats))
    print(f"\nwrote {args.out}/ (clients.sqlite, vocab.json, stats.json)")
    return 0


run_train = _not_built("train")
run_eval = _not_built("eval")
run_export = _not_built("export")
run_predict = _not_built("predict")
run_app = _not_built("app")
run_worker = _not_built("worker")
run_bench = _not_built("bench")
run_demo = _not_built("demo")
