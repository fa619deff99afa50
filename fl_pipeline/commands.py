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
run_app = _not_built("app")
run_worker = _not_built("worker")
run_bench = _not_built("bench")
run_demo = _not_built("demo")
