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


run_data = _not_built("data")
run_train = _not_built("train")
run_eval = _not_built("eval")
run_export = _not_built("export")
run_predict = _not_built("predict")
run_app = _not_built("app")
run_worker = _not_built("worker")
run_bench = _not_built("bench")
run_demo = _not_built("demo")
