"""`fedkb audit`: how much a trained model memorized the planted canaries.

The Secret Sharer exposure (Carlini et al., 2019). A canary is a sentence
of a fixed format with a random secret, "my pin number is 4 8 1 5 2",
planted by `fedkb data prepare --canaries` (`datasets/canaries.py`). Its
log-perplexity under the model is ranked among the log-perplexities of all
|R| = 10^D sentences of the same format (every D-digit secret):

    exposure = log2 |R| - log2 rank          (rank 1 = the model's favourite)

A secret the model knows nothing about has a uniformly random rank, so its
exposure averages log2(e) = 1.44 bits; a fully memorized one has rank 1 and
exposure log2 |R| (16.6 bits for 5 digits). The report includes such
never-planted secrets as controls. Exposure measures memorization of this
model on these canaries; it does not prove the absence of memorization of
anything else (differential privacy is the bound, see README).

How: exactly, by scoring every candidate (no sampling or skew-normal
extrapolation, which the paper uses for spaces too large to enumerate).
The log-perplexity is that of the canary as the model reads it in training
and on the keyboard: one window, left-padded with `<pad>` to T tokens (so
`prepare` requires the canary to fit in one window). All candidates share
the prefix, so the LSTM runs over it once; the secret's digits form a tree
(10 children per node), and each node costs one LSTM step and one output
row: 111,110 steps for 5 digits instead of 100,000 full sequences. The
tests check the result against the Keras model's full forward pass.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from datasets.canaries import CANARIES_FILE, DIGITS, CanarySet, canary_text
from datasets.errors import FedKBError
from datasets.examples import encode_text, windows
from datasets.store import ClientStore, store_client_id
from datasets.vocab import IGNORED_TARGET_IDS, PAD_ID, Vocabulary
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import AUDIT_REPORT, CONFIG, load_finished_run, round_plans, write_json

FORMAT = "fedkb-audit/1"
CONTROLS = 100  # never-planted secrets scored as a baseline
_CHUNK = 4096  # rows per batch of LSTM steps / output rows


class AuditError(FedKBError):
    """A run or data directory that cannot be audited."""


def sequence_logprob(model: tf.keras.Model, ids: list[int], seq_len: int) -> float:
    """ln P(ids) under the model, as training reads the text: its windows, each
    target except `<pad>`/`<bos>` predicted once (the reference computation)."""
    total = 0.0
    for window in windows(ids, seq_len):
        x = np.array([window[:-1]], np.int32)
        logp = tf.nn.log_softmax(model(x, training=False), axis=-1).numpy()[0]
        for t, target in enumerate(window[1:]):
            if target not in IGNORED_TARGET_IDS:
                total += float(logp[t, target])
    return total


class _Stepper:
    """The model one token at a time: embedding -> LSTM cell -> projection -> tied output."""

    def __init__(self, model: tf.keras.Model):
        self.embedding = model.get_layer("embedding")
        self.cell = model.get_layer("lstm").cell
        self.projection = model.get_layer("projection")
        self.output = model.get_layer("output")
        self.units = model.get_layer("lstm").units

    def zero_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros([batch, self.units], np.float32),) * 2

    def step(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray):
        """Feeds tokens [B]; returns (LSTM output [B, U], h, c), in chunks of rows."""
        outs, hs, cs = [], [], []
        for start in range(0, len(tokens), _CHUNK):
            rows = slice(start, start + _CHUNK)
            y, (h2, c2) = self.cell(self.embedding(tf.constant(tokens[rows])),
                                    [tf.constant(h[rows]), tf.constant(c[rows])])
            outs.append(y.numpy())
            hs.append(h2.numpy())
            cs.append(c2.numpy())
        return np.concatenate(outs), np.concatenate(hs), np.concatenate(cs)

    def logprobs(self, y: np.ndarray, columns: list[int]) -> np.ndarray:
        """ln p(token | state) for the given token ids: [B, len(columns)] (float64)."""
        result = []
        for start in range(0, len(y), _CHUNK):
            logits = self.output(self.projection(y[start:start + _CHUNK]))
            logp = tf.nn.log_softmax(logits, axis=-1)
            result.append(tf.gather(logp, columns, axis=1).numpy().astype(np.float64))
        return np.concatenate(result)


def secret_logprobs(model: tf.keras.Model, vocab: Vocabulary, canaries: CanarySet, seq_len: int,
                    progress: bool = False) -> np.ndarray:
    """ln P(sentence) for every candidate secret, indexed by the secret's value
    ("00042" -> 42): the whole canary sentence, prefix and `<eos>` included."""
    ids = encode_text(canary_text("0" * canaries.digits), vocab)
    prefix = encode_text(canaries.prefix, vocab)[:-1]  # <bos> my pin number is (no <eos>)
    suffix = ids[len(prefix) + canaries.digits:]  # <eos>
    if ids[:len(prefix)] != prefix:
        raise AuditError(f"the canary format {canaries.prefix!r} does not tokenize as a prefix")
    if len(ids) > seq_len + 1:
        raise AuditError(f"a canary is {len(ids)} tokens, more than one window of the model "
                         f"(seq_len {seq_len} + 1)")
    digit_ids = [vocab.id(d) for d in DIGITS]
    stepper = _Stepper(model)
    # The shared part: <pad>s, then the prefix; its targets' log-probabilities.
    inputs = [PAD_ID] * (seq_len + 1 - len(ids)) + prefix
    h, c = stepper.zero_state(1)
    constant = 0.0
    for position, token in enumerate(inputs):
        y, h, c = stepper.step(np.array([token], np.int32), h, c)
        target_index = position + 1 - (len(inputs) - len(prefix))  # index into prefix
        if 0 < target_index < len(prefix):
            constant += float(stepper.logprobs(y, [prefix[target_index]])[0, 0])
    # The digits: a tree, one LSTM step per node.
    scores = np.zeros([1])
    levels = tqdm(range(canaries.digits), desc="scoring candidate secrets", unit="digit",
                  disable=not progress)
    for _ in levels:
        scores = (scores[:, None] + stepper.logprobs(y, digit_ids)).reshape(-1)
        tokens = np.tile(np.array(digit_ids, np.int32), len(y))
        y, h, c = stepper.step(tokens, np.repeat(h, 10, axis=0), np.repeat(c, 10, axis=0))
    for k, token in enumerate(suffix):
        scores = scores + stepper.logprobs(y, [token])[:, 0]
        if k + 1 < len(suffix):
            y, h, c = stepper.step(np.full(len(y), token, np.int32), h, c)
    return scores + constant


def exposure(logprobs: np.ndarray, index: int) -> tuple[int, float]:
    """(rank, exposure in bits) of candidate `index` among all candidates."""
    rank = 1 + int(np.sum(logprobs > logprobs[index]))
    return rank, math.log2(len(logprobs)) - math.log2(rank)


def _copies_in_training(store: ClientStore, canary_ids: list[int], client_id: str, seq_len: int,
                        max_examples: int) -> int:
    """Windows of the canary among the first `max_examples` of the client's training
    windows: the copies training could read (it takes each client's first N)."""
    target = windows(canary_ids, seq_len)[0]
    db = sqlite3.connect(f"{store.database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT serialized_example_proto FROM examples WHERE split_name = "
                          "'train' AND client_id = ? ORDER BY rowid LIMIT ?",
                          (store_client_id(client_id), max_examples)).fetchall()
    finally:
        db.close()
    found = 0
    for (blob,) in rows:
        tokens = tf.train.Example.FromString(blob).features.feature["tokens"].int64_list.value
        found += list(tokens) == target
    return found


def audit_run(run_dir: str | Path, data_dir: str | Path | None = None, *,
              progress: bool = False) -> dict:
    """Exposure of every canary of the run's data; writes RUN_DIR/audit.json and returns it."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    model, vocab, config, summary = load_finished_run(run_dir)
    data_dir = Path(data_dir if data_dir is not None else (config.get("data") or {}).get("dir") or "")
    canaries = CanarySet.load(data_dir / CANARIES_FILE)
    if not canaries.canaries:
        raise AuditError(f"{data_dir / CANARIES_FILE}: lists no canaries")
    store = ClientStore(data_dir)
    if store.vocab.sha256 != vocab.sha256:
        raise AuditError(f"{run_dir} was not trained on {data_dir} (the vocabularies differ); "
                         "pass the run's data directory with --data")
    try:
        train = TrainConfig.from_json(config["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise AuditError(f"{run_dir / CONFIG}: not a federated run's settings ({e})") from None
    seq_len = model.input_shape[1]

    logprobs = secret_logprobs(model, vocab, canaries, seq_len, progress=progress)
    train_ids = store.client_ids("train")
    plans = round_plans(train_ids, train)
    rows = []
    for canary in canaries.canaries:
        rank, bits = exposure(logprobs, int(canary.secret))
        ids = encode_text(canary.text, vocab)
        rows.append({
            "secret": canary.secret, "text": canary.text, "repeats": canary.repeats,
            "client_id": canary.client_id,
            "copies_in_training": _copies_in_training(store, ids, canary.client_id, seq_len,
                                                      train.max_examples_per_client),
            "rounds_in_training": sum(canary.client_id in p.aggregated for p in plans),
            "log_perplexity_bits": -float(logprobs[int(canary.secret)]) / math.log(2),
            "rank": rank, "exposure_bits": bits,
        })
    planted = {int(c.secret) for c in canaries.canaries}
    rng = np.random.default_rng([canaries.seed, 7])
    pool = np.array([i for i in rng.choice(len(logprobs), size=min(len(logprobs), CONTROLS + len(planted)),
                                           replace=False) if i not in planted][:CONTROLS])
    control_bits = [exposure(logprobs, int(i))[1] for i in pool]
    report = {
        "format": FORMAT,
        "run_dir": str(run_dir),
        "data_dir": str(data_dir),
        "method": "exact: every candidate secret scored with the model (Secret Sharer exposure)",
        "canary_format": f"{canaries.prefix} " + " ".join(["<digit>"] * canaries.digits),
        "candidates": len(logprobs),
        "max_exposure_bits": math.log2(len(logprobs)),
        "training": {"rounds": train.rounds, "clients_per_round": summary.get("clients_per_round"),
                     "max_examples_per_client": train.max_examples_per_client,
                     "dp": summary.get("dp"), "dropout": train.dropout},
        "canaries": rows,
        "controls": {"count": len(control_bits),
                     "mean_exposure_bits": float(np.mean(control_bits)) if control_bits else None,
                     "max_exposure_bits": float(np.max(control_bits)) if control_bits else None},
        "seconds": round(time.perf_counter() - started, 2),
    }
    try:
        write_json(run_dir / AUDIT_REPORT, report)
    except OSError as e:
        raise AuditError(f"{run_dir / AUDIT_REPORT}: cannot write ({e.strerror})") from None
    return report


def mean_exposure_by_repeats(report: dict) -> dict[int, float]:
    """{repeats: mean exposure in bits} of an audit report (for comparing runs, e.g. with/without DP)."""
    by_repeats: dict[int, list[float]] = {}
    for row in report["canaries"]:
        by_repeats.setdefault(row["repeats"], []).append(row["exposure_bits"])
    return {r: float(np.mean(v)) for r, v in sorted(by_repeats.items())}


def format_exposure_table(report: dict) -> str:
    """The table `fedkb audit` prints."""
    dp = report["training"]["dp"]
    privacy = (f"DP noise {dp['noise_multiplier']}, epsilon {dp['epsilon']:.2f}" if dp
               else "no differential privacy")
    lines = [
        f"memorization audit of {report['run_dir']} ({privacy}, {report['training']['rounds']} rounds)",
        f"canary format: \"{report['canary_format']}\", ranked among {report['candidates']:,} "
        f"candidates; exposure = log2({report['candidates']:,}) - log2(rank), "
        f"at most {report['max_exposure_bits']:.1f} bits",
        "",
        f"{'secret':<10}{'repeats':>8}{'in training':>13}{'rounds':>8}{'log-perplexity':>16}"
        f"{'rank':>10}{'exposure':>10}",
    ]
    for row in report["canaries"]:
        lines.append(f"{row['secret']:<10}{row['repeats']:>8}{row['copies_in_training']:>13}"
                     f"{row['rounds_in_training']:>8}{row['log_perplexity_bits']:>14.1f} b"
                     f"{row['rank']:>10,}{row['exposure_bits']:>8.1f} b")
    controls = report["controls"]
    if controls["count"]:
        lines += ["", f"controls ({controls['count']} secrets never planted): mean exposure "
                  f"{controls['mean_exposure_bits']:.1f} b, max {controls['max_exposure_bits']:.1f} b "
                  "(chance: 1.4 b on average)"]
    lines.append("'in training': copies within the client's first max_examples_per_client windows; "
                 "'rounds': rounds whose aggregate included that client")
    return "\n".join(lines)
