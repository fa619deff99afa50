"""The exported model on chat from another source, against a bigram typist counted from the
phones' text (issue 14 §3: do not tune to chitchat alone).

    .venv/bin/python -m fl_pipeline.bench.other_chat MODEL_DIR RUN_DIR TEXTS...

TEXTS: ChatterBot-corpus `.yml` files (the `chatterbot-corpus` package, BSD license: short
English dialogues; each line of a conversation is one message) or plain `.txt` files (one
message per non-blank line). Both the model (its `model.tflite` through the app's
`Predictor`) and the bigram/trigram fitted on the run's training clients (the same text the
federated model learned from, pooled) type every message by the rules of
`fl_pipeline.evaluation.keyboard_metrics`; the table shows strip top-3 and KSR, pooled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_messages(path: Path) -> list[str]:
    """Messages of a ChatterBot .yml file (list items under `conversations`) or a .txt file."""
    lines = path.read_text("utf-8").splitlines()
    if path.suffix not in (".yml", ".yaml"):
        return [line.strip() for line in lines if line.strip()]
    messages, inside = [], False
    for line in lines:
        if line.startswith("conversations:"):
            inside = True
            continue
        stripped = line.lstrip(" -")
        if inside and line.lstrip().startswith("-") and stripped:
            text = stripped.strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1]
            messages.append(text)
    return messages


def check(model_dir: Path, run_dir: Path, texts: list[Path]) -> dict:
    from fl_pipeline.evaluation import keyboard_metrics
    from fl_pipeline.evaluation.baselines import KneserNeyTrigram, WordPairBigram
    from fl_pipeline.run_dir import load_run_config, open_store
    from keyboard_app.predictor import Predictor

    model_config, config, data = load_run_config(run_dir)
    store = open_store(Path(data["dir"]))
    messages = [m for path in texts for m in read_messages(path)]
    pool = store.client_data("train").create_tf_dataset_from_all_clients(seed=config.seed)
    windows = [e["tokens"].numpy() for e in pool]
    suggesters = {"federated (TFLite)": Predictor(model_dir)}
    for name, kind in (("n-gram", KneserNeyTrigram), ("bigram", WordPairBigram)):
        suggesters[name] = keyboard_metrics.ngram_suggester(
            kind(model_config.vocab_size).fit(windows), store.vocab, model_config.seq_len)
    rows = {}
    for name, suggester in suggesters.items():
        tally = keyboard_metrics.type_messages(suggester, messages, store.vocab)
        rows[name] = {**tally.rates(), "words": tally.words, "characters": tally.characters}
    return {"messages": len(messages), "sources": [str(p) for p in texts],
            "counted_from": f"{store.data_dir} training clients (the phones' text, pooled)",
            "models": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("texts", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    args = parser.parse_args()
    for path in args.texts:
        try:
            if not read_messages(path):
                parser.error(f"{path}: no messages (a ChatterBot .yml with `conversations:`, "
                             "or a .txt with one message per line)")
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})")
    report = check(args.model_dir, args.run_dir, args.texts)
    print(f"{report['messages']} messages from {len(args.texts)} file(s); n-gram and bigram "
          f"counted from {report['counted_from']}")
    print(f"{'model':<20} {'strip top-1':>11} {'strip top-3':>11} {'KSR':>6}")
    for name, row in report["models"].items():
        print(f"{name:<20} {row['next_top1']:>11.3f} {row['next_top3']:>11.3f} {row['ksr']:>6.3f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), "utf-8")


if __name__ == "__main__":
    main()
