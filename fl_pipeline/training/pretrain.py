"""`fedkb pretrain`: a warm start for federated training, from PUBLIC text on the server.

The server trains the same next-word model centrally (Adam, as the centralized
baseline does) on the training clients of a *public* client store, e.g. the
built-in fortunes, which no phone holds. `fedkb train --init-from DIR` then
starts the federated rounds from those weights instead of a random model. The
phones' text never reaches the server; the public text never reaches the phones.

    PRETRAIN_DIR/
      config.json            {"kind": "pretrain", model, pretrain settings, data: the public store}
      vocab.json             the vocabulary (the same as the phones' store: checked at --init-from)
      final_model.weights.h5 Keras weights of the pretrained model
      summary.json           example passes, wall time, the public store's held-out metrics

Refusals (one line, exit 2), all before TensorFlow starts work:

- `--init-from` weights pretrained on the phones' own corpus (same corpus name): that would
  not be public text, and the "federated" model would have seen the phones' data centrally.
- a vocabulary whose sha256 differs from the phones' store: token ids would mean other words.
- a model shape (vocabulary size, context, widths) that differs from the run's.

Optionally (`--unigram-bias`) the output bias starts at the log of wordfreq's public unigram
frequencies (`unigram_bias`), so the model predicts common words from step 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import FedKBError
from datasets.vocab import BOS_ID, EOS_ID, OOV_ID, PAD_ID, Vocabulary
from fl_pipeline.run_dir import CONFIG, FINAL_WEIGHTS, SUMMARY, VOCAB, open_store, write_json
from models.config import ModelConfig



class InitError(FedKBError):
    """A pretraining or --init-from that cannot be done as asked."""


@dataclass(frozen=True)
class PretrainConfig:
    examples: int = 60_000  # example passes over the public training windows
    batch_size: int = 16
    learning_rate: float = 2e-3  # Adam, as the centralized baseline
    seed: int = 0
    unigram_bias: bool = False

    def __post_init__(self):
        for name in ("examples", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"PretrainConfig.{name} must be a positive integer")
        if not self.learning_rate > 0:
            raise ValueError("PretrainConfig.learning_rate must be positive")


NAMED_CORPORA = ("fortunes", "chitchat", "stackoverflow")  # --corpus names, not files


def corpus_name(store) -> str:
    """What text a store holds: a named corpus ('fortunes', 'chitchat'), else its format and
    file ('jsonl:/data/phones.jsonl'): two stores with the same one hold the same text."""
    corpus = store.stats.get("corpus", {})
    name = str(corpus.get("name") or store.stats.get("config", {}).get("corpus"))
    if name in NAMED_CORPORA or not corpus.get("source"):
        return name
    return f"{name}:{corpus['source']}"


def unigram_bias(vocab: Vocabulary):
    """Log unigram frequencies from wordfreq (public), centered: the output bias's start.

    Words get log(wordfreq frequency); `<eos>` and punctuation, which wordfreq does not
    count, get the log frequency of the most common word (a sentence ends about as often);
    `<pad>`, `<bos>` and `<oov>` (never right) the floor."""
    import numpy as np
    import wordfreq

    floor = math.log(1e-8)
    top = math.log(max(wordfreq.word_frequency("the", "en"), 1e-8))
    bias = np.full([len(vocab)], floor, np.float32)
    for i, token in enumerate(vocab.tokens):
        if i in (PAD_ID, BOS_ID, OOV_ID):
            continue
        if i == EOS_ID or not vocab.is_word(i):
            bias[i] = top
        else:
            bias[i] = math.log(max(wordfreq.word_frequency(token, "en"), 1e-8))
    return bias - bias.mean()


def pretrain(public_dir: Path, out: Path, config: PretrainConfig = PretrainConfig(),
             model_overrides: dict | None = None, for_data: Path | None = None,
             show_progress: bool = True) -> dict:
    """Trains the model centrally on the public store's training clients; writes `out`."""
    store = open_store(public_dir)
    if for_data is not None:  # check the phones' store now, not after minutes of training
        phones = open_store(for_data)
        check_public(corpus_name(store), store.vocab.sha256, phones, f"{public_dir}")
    if out.exists():
        raise InitError(f"{out} already exists; choose another --out")
    model_config = ModelConfig(vocab_size=len(store.vocab), seq_len=store.seq_len,
                               **(model_overrides or {}))
    from fl_pipeline.evaluation.baselines import score_keras, train_centralized
    from fl_pipeline.training.client_data import to_model_batches
    from models.next_word import build_model

    started = time.monotonic()
    initial = build_model(model_config, seed=config.seed)
    if config.unigram_bias:
        initial.get_layer("output").bias.assign(unigram_bias(store.vocab))
    pool = store.client_data("train").create_tf_dataset_from_all_clients(seed=config.seed)
    model = train_centralized(model_config, pool, examples=config.examples,
                              batch_size=config.batch_size, learning_rate=config.learning_rate,
                              seed=config.seed, show_progress=show_progress,
                              initial_weights=initial.get_weights())
    heldout = score_keras(model, to_model_batches(
        store.client_data("heldout_future").create_tf_dataset_from_all_clients(),
        batch_size=64)).result()
    # Written next to `out`, then renamed: a crash leaves no half directory that
    # `fedkb demo` would take for a finished pretraining (or refuse to overwrite).
    partial = out.with_name(out.name + ".partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        shutil.copyfile(store.data_dir / VOCAB, partial / VOCAB)
        model.save_weights(str(partial / FINAL_WEIGHTS))
        write_json(partial / CONFIG, {
            "kind": "pretrain",
            "model": model_config.to_json(),
            "pretrain": {**config.__dict__},
            "data": {"dir": str(store.data_dir.resolve()), "corpus": corpus_name(store),
                     "vocab_sha256": store.vocab.sha256, "public": True},
        })
        summary = {"kind": "pretrain", "corpus": corpus_name(store),
                   "training_clients": len(store.client_ids("train")),
                   "examples": (config.examples // config.batch_size) * config.batch_size,
                   "wall_time_s": time.monotonic() - started,
                   "heldout_of_public_store": heldout.to_json(),
                   "weights_sha256": file_sha256(partial / FINAL_WEIGHTS),
                   "initial_bias": "wordfreq unigram" if config.unigram_bias else "zeros"}
        write_json(partial / SUMMARY, summary)
        partial.rename(out)
    except OSError as e:
        raise InitError(f"{out}: cannot write ({e.strerror})") from None
    return summary


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_public(init_corpus: str, init_vocab_sha256: str, phones, source: str) -> None:
    """Refuses an init trained on the phones' own corpus, or on another vocabulary."""
    if init_corpus == corpus_name(phones):
        raise InitError(f"{source} was trained on '{init_corpus}', the corpus the phones hold "
                        f"({phones.data_dir}); pretrain on other, public text (e.g. "
                        f"{'fortunes' if init_corpus != 'fortunes' else 'chitchat'})")
    if init_vocab_sha256 != phones.vocab.sha256:
        raise InitError(f"{source} uses another vocabulary than {phones.data_dir} (sha256 "
                        f"{init_vocab_sha256[:12]} vs {phones.vocab.sha256[:12]}); prepare both "
                        "stores with the same vocabulary (the default wordfreq list)")


def resolve_init(source: Path, phones, model_config: ModelConfig) -> tuple[dict, Path]:
    """(the run's `init` record, the weights file) for `--init-from source`, checked.

    `source`: a `fedkb pretrain` directory, a `fedkb train` run directory, or a
    `.weights.h5` file inside one of them (its `config.json` says what it was trained on)."""
    if source.is_dir():
        directory, weights = source, source / FINAL_WEIGHTS
    elif source.is_file():
        directory, weights = source.parent, source
    else:
        raise InitError(f"{source}: not found; give a `fedkb pretrain` or `fedkb train` output "
                        "directory, or a .weights.h5 file inside one")
    config_path = directory / CONFIG
    try:
        config = json.loads(config_path.read_text("utf-8"))
        data, model = config["data"], config["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InitError(f"{config_path}: missing or not a FedKB config; --init-from needs to know "
                        "what the weights were trained on") from None
    if not weights.is_file():
        raise InitError(f"{weights}: not found; finish that pretraining or run first")
    kind = config.get("kind", "federated run")
    corpus = data.get("corpus")
    if corpus is None:  # a train run of an older FedKB: its config names the store only
        try:
            corpus = corpus_name(open_store(Path(data["dir"])))
        except FedKBError:
            raise InitError(f"{config_path}: names no corpus and its data directory "
                            f"{data.get('dir')} is gone; cannot tell whether it is public") from None
    check_public(corpus, data.get("vocab_sha256", ""), phones, str(source))
    if ModelConfig(**model) != model_config:
        raise InitError(f"{source}: its model {model} differs from this run's "
                        f"{model_config.to_json()}; use the same --embedding-dim/--lstm-units")
    record = {"from": str(source.resolve()), "kind": kind, "corpus": corpus,
              "data_dir": data.get("dir"), "vocab_sha256": data.get("vocab_sha256"),
              "weights_sha256": file_sha256(weights),
              "public_text": kind == "pretrain",
              "statement": (f"initialized from weights trained centrally on the server on "
                            f"'{corpus}' ({'public text' if kind == 'pretrain' else 'a ' + kind}); "
                            f"the federated rounds use the phones' '{corpus_name(phones)}' "
                            "text, which never leaves them")}
    if kind == "pretrain":
        record["pretrain"] = config.get("pretrain")
    return record, weights
