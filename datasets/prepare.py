"""`fedkb data prepare`: corpus -> clients -> splits -> vocabulary -> client store.

Reads the corpus (all of its text is held in memory while preparing; the
store is what keeps training lazy), keeps `max_clients` of them if asked,
splits clients into training and held-out, builds the vocabulary (public
`wordfreq` words by default, or the training clients' own words), encodes
every text into windows of T+1 ids (one message per window, or a client's
messages packed together with `pack="messages"`) and writes `clients.sqlite`, `vocab.json`
and `stats.json` into the output directory (and `canaries.json` when
canaries are planted for a memorization audit, see `datasets/canaries.py`). Nothing is dropped without
being counted in `stats.json`.

Caps on what one person contributes (`client_texts`, the one place they
are applied): every client keeps at most `max_texts_per_client` texts, its
most recent ones in order (a phone holds a bounded recent history, and a
few prolific people would otherwise outweigh everyone: in the chitchat
corpus three senders typed 24% of all messages); a held-out client's kept
texts then split into past and future, and its future keeps the first
`max_future_texts` (the texts right after its past), so that no one user
dominates the held-out metrics.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets.canaries import CANARIES_FILE, DIGITS, CanaryError, CanarySet, insert, plant
from datasets.corpus import Corpus, CorpusError, ReadLog, progress_bar
from datasets.examples import encode_text, pad_count, packed_windows, windows
from datasets.layout import DATA_DIR
from datasets.readers import BUILTIN, read_corpus
from datasets.splits import (HELDOUT_FUTURE, HELDOUT_PAST, SPLITS, TRAIN, ClientSplit,
                             select_clients, split_clients, split_past_future, split_problem)
from datasets.stats import ClientSizes, SplitCounts, padding_fraction
from datasets.store import (FEATURE, FORMAT, SEGMENTS, STATS_FILE, STORE_FILE, VOCAB_FILE,
                            StoreWriter, serialize_example, serialize_tokens, store_client_id)
from datasets.tokenizer import tokenize
from datasets.vocab import OOV_ID, RESERVED_TOKENS, Vocabulary, count_tokens


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides what `prepare` writes (the CLI's `data prepare` options)."""

    corpus: str = "fortunes"
    out: Path = DATA_DIR
    vocab_size: int = 10_000
    vocab_from_data: bool = False
    include_offensive: bool = False
    heldout_fraction: float = 0.1
    past_fraction: float = 0.8
    seq_len: int = 20
    max_clients: int | None = None
    skip_bad_lines: bool = False
    seed: int = 0
    canaries: int = 0  # canaries planted per repeat count (0: none), see datasets/canaries.py
    canary_repeats: tuple[int, ...] = (1, 4, 16)  # copies of each canary in its client
    canary_digits: int = 5  # digits of a secret: 10^digits candidates to rank it among
    max_texts_per_client: int | None = 1_000  # each client's most recent texts (None: all)
    max_future_texts: int | None = 200  # a held-out client's future texts scored (None: all)
    pack: str = "none"  # how training windows are made: one of PACK_MODES


@dataclass(frozen=True)
class PrepareResult:
    """What was written: the stats (as in `stats.json`) and a warning about skipped input."""

    stats: dict
    warning: str | None


# How training windows are made (--pack). The held-out future is always one message
# per window: it is scored the way the app predicts, from the current message alone.
PACK_MODES = {
    "none": "one message per window, left-padded: a message sees only itself, as in the app",
    "messages": "a client's consecutive messages packed into windows: a message follows the "
                "earlier ones of its window (the LSTM carries them in its state) unless "
                f"training uses the '{SEGMENTS}' feature to cut that context",
}
PACKED_SPLITS = (TRAIN, HELDOUT_PAST)


@dataclass
class CappedTexts:
    """What each client contributes after the caps, and what the caps removed."""

    train: dict[str, list[str]]
    heldout: dict[str, tuple[list[str], list[str]]]  # (past, future)
    caps: dict


def _share_of_largest(groups) -> float:
    sizes = [len(texts) for texts in groups]
    return round(max(sizes) / sum(sizes), 4) if sum(sizes) else 0.0


def client_texts(config: PrepareConfig, clients: dict[str, list[str]], split: ClientSplit
                 ) -> CappedTexts:
    """Each client's texts after the caps: training texts, held-out (past, future)."""
    recent = config.max_texts_per_client
    kept = {c: clients[c][-recent:] if recent else clients[c] for c in split.train + split.heldout}
    train = {c: kept[c] for c in split.train}
    heldout, futures = {}, []  # futures: before the future cap
    for client in split.heldout:
        past, future = split_past_future(kept[client], config.past_fraction)
        futures.append(future)
        heldout[client] = (past, future[:config.max_future_texts])
    future_removed = [len(f) - len(heldout[c][1]) for c, f in zip(split.heldout, futures)]
    groups = {"train": split.train, "heldout": split.heldout}
    caps = {
        "max_texts_per_client": recent, "keeps": "each client's most recent texts, in order",
        "clients_capped": {g: sum(len(clients[c]) > len(kept[c]) for c in ids)
                           for g, ids in groups.items()},
        "texts_removed": {g: sum(len(clients[c]) - len(kept[c]) for c in ids)
                          for g, ids in groups.items()},
        "largest_training_client_share": {
            "before": _share_of_largest(clients[c] for c in split.train),
            "after": _share_of_largest(train.values())},
        "max_future_texts": config.max_future_texts,
        "future_keeps": "the first future texts, right after the client's past",
        "future_clients_capped": sum(n > 0 for n in future_removed),
        "future_texts_removed": sum(future_removed),
        "largest_future_client_share": {  # before: without either cap
            "before": _share_of_largest(split_past_future(clients[c], config.past_fraction)[1]
                                        for c in split.heldout),
            "after": _share_of_largest(future for _, future in heldout.values())},
    }
    return CappedTexts(train, heldout, caps)


def _build_vocab(config: PrepareConfig, clients: dict[str, list[str]], train: list[str]
                 ) -> tuple[Vocabulary, str]:
    if config.vocab_size <= len(RESERVED_TOKENS):
        raise CorpusError(f"--vocab-size must exceed the {len(RESERVED_TOKENS)} reserved tokens "
                          f"(<pad>, <oov>, <bos>, <eos>, punctuation), got {config.vocab_size}")
    if config.vocab_from_data:  # never from held-out clients: they stand for unseen users
        counts = count_tokens(text for client in train for text in clients[client])
        return Vocabulary.from_counts(counts, config.vocab_size), "training clients' text"
    return Vocabulary.from_wordfreq(config.vocab_size), "wordfreq (public English word list)"


def _write_json(path: Path, data: dict) -> None:
    """Writes via a temporary file, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", "utf-8")
    os.replace(partial, path)


@dataclass
class _Tally:
    """Running totals while writing: per split, per client group, escaped ids."""

    splits: dict = field(default_factory=lambda: {name: SplitCounts() for name in SPLITS})
    sizes: dict = field(default_factory=lambda: {"train": ClientSizes(), "heldout": ClientSizes()})
    escaped_ids: int = 0
    # Training windows' <pad> ids and all ids, per pack mode, whichever is stored.
    train_padding: dict = field(default_factory=lambda: {m: [0, 0] for m in PACK_MODES})


def _windows(messages: list[list[int]], pack: str, seq_len: int, split: str
             ) -> list[tuple[list[int], list[int] | None]]:
    """A split's (window, segments or None) of one client's encoded messages."""
    if pack == "messages" and split in PACKED_SPLITS:
        return packed_windows(messages, seq_len)
    return [(w, None) for ids in messages for w in windows(ids, seq_len)]


def _write_client(writer: StoreWriter, client: str, parts: list[tuple[str, list[str]]],
                  heldout: bool, vocab: Vocabulary, config: PrepareConfig, tally: _Tally) -> None:
    """Encodes one client's texts into windows and stores them in its split(s)."""
    stored_id = store_client_id(client)
    tally.escaped_ids += stored_id != client
    num_texts = client_tokens = client_examples = 0
    for split, part in parts:
        messages = [encode_text(text, vocab) for text in part]
        for text, ids in zip(part, messages):
            tally.splits[split].add_text(text, ids)
            client_tokens += len(ids)
        made = _windows(messages, config.pack, config.seq_len, split)
        tally.splits[split].add_windows([w for w, _ in made])
        if split == TRAIN:  # the padding of every pack mode, to compare
            for mode, counts in tally.train_padding.items():
                other = made if mode == config.pack else _windows(messages, mode, config.seq_len, split)
                counts[0] += pad_count([w for w, _ in other])
                counts[1] += (config.seq_len + 1) * len(other)
        blobs = [serialize_tokens(w) if seg is None else serialize_example({FEATURE: w, SEGMENTS: seg})
                 for w, seg in made]
        written = writer.add(split, stored_id, blobs)
        tally.splits[split].clients += written > 0
        num_texts += len(part)
        client_examples += written
    tally.sizes["heldout" if heldout else "train"].add(num_texts, client_tokens, client_examples)


def _check(config: PrepareConfig) -> None:
    if not 0.0 < config.heldout_fraction < 1.0 or not 0.0 < config.past_fraction < 1.0:
        raise CorpusError("--heldout-fraction and --past-fraction must be between 0 and 1")
    if config.pack not in PACK_MODES:
        raise CorpusError(f"--pack must be one of {', '.join(PACK_MODES)}, got {config.pack!r}")
    if config.include_offensive and config.corpus != BUILTIN:
        raise CorpusError(f"--include-offensive applies only to the built-in '{BUILTIN}' corpus, "
                          f"not to {config.corpus}; drop the option")


def _plant_canaries(config: PrepareConfig, clients: dict[str, list[str]], train: list[str]
                    ) -> tuple[dict[str, list[str]], CanarySet | None]:
    """The clients' texts with canaries inserted (a new dict; the corpus is left as read)."""
    if not config.canaries:
        return clients, None
    planted = plant(train, config.canaries, config.canary_repeats, config.canary_digits,
                    config.seed)
    clients = dict(clients)
    for canary in planted.canaries:
        clients[canary.client_id] = insert(clients[canary.client_id], canary, config.seed)
    return clients, planted


def _check_canaries_fit(planted: CanarySet, vocab: Vocabulary, seq_len: int) -> None:
    """Every canary token must be a vocabulary word, and a canary one training window."""
    text = planted.canaries[0].text
    missing = sorted(t for t in set(tokenize(text)) | set(DIGITS) if vocab.id(t) == OOV_ID)
    if missing:
        raise CanaryError(f"canary words {', '.join(missing)} are not in the vocabulary, so the "
                          "model could not learn the secrets; use a larger --vocab-size")
    length = len(encode_text(text, vocab))
    if length > seq_len + 1:
        raise CanaryError(f"a canary is {length} tokens, longer than one training window "
                          f"(--seq-len {seq_len} + 1); use --seq-len {length - 1} or more")


def read_and_split(config: PrepareConfig, log: ReadLog) -> tuple[Corpus, list[str], ClientSplit]:
    """The corpus, the clients kept (`max_clients`) and their train / held-out split.

    The first half of `prepare`; `fedkb bench` calls it with a store's
    recorded config to get the raw texts behind the store back.
    """
    _check(config)
    corpus = read_corpus(config.corpus, log, include_offensive=config.include_offensive,
                         max_clients=config.max_clients, seed=config.seed)
    if len(corpus.clients) < 2:
        raise CorpusError(f"{corpus.source}: {len(corpus.clients)} client(s) with usable text; "
                          "FedKB needs at least 2 (one to train on, one held out); add text")
    kept = (select_clients(corpus.clients, config.max_clients, config.seed)
            if config.max_clients else sorted(corpus.clients))
    split = split_clients(kept, config.heldout_fraction, config.seed)
    future = sum(1 for c in split.heldout
                 if split_past_future(corpus.clients[c], config.past_fraction)[1])
    problem = split_problem(len(split.train), len(split.heldout), future)
    if problem:
        raise CorpusError(f"{corpus.source}: {problem}; add text or clients, or change "
                          "--seed, --heldout-fraction or --max-clients")
    return corpus, kept, split


def check_out(out: Path, force: bool) -> None:
    """Refuses to replace a finished store (one with stats.json) unless `force`."""
    if (out / STATS_FILE).exists() and not force:
        raise CorpusError(f"{out}: already holds a prepared client store; pass --force to "
                          "replace it, or choose another --out")


def prepare(config: PrepareConfig, *, force: bool = False) -> PrepareResult:
    """Reads, splits, encodes and writes a corpus; returns its stats.

    An existing store in `config.out` is replaced only with `force`."""
    out = Path(config.out)
    check_out(out, force)
    log = ReadLog(skip_bad_lines=config.skip_bad_lines)
    corpus, kept, split = read_and_split(config, log)
    texts = client_texts(config, corpus.clients, split)
    train, planted = _plant_canaries(config, texts.train, split.train)
    vocab, vocab_source = _build_vocab(config, train, split.train)
    if planted is not None:
        _check_canaries_fit(planted, vocab, config.seq_len)

    out.mkdir(parents=True, exist_ok=True)
    (out / STATS_FILE).unlink(missing_ok=True)  # the store is incomplete until stats.json is back
    (out / CANARIES_FILE).unlink(missing_ok=True)  # never an old run's secrets next to new data
    tally = _Tally()
    work = ([(c, False, [(TRAIN, train[c])]) for c in split.train]
            + [(c, True, list(zip((HELDOUT_PAST, HELDOUT_FUTURE), texts.heldout[c])))
               for c in split.heldout])
    with (StoreWriter(out / STORE_FILE) as writer,
          progress_bar(work, desc="writing client store", unit="client") as bar):
        for client, heldout, parts in bar:
            _write_client(writer, client, parts, heldout, vocab, config, tally)

    found = len(corpus.clients) + corpus.clients_not_read
    stats = {
        "format": FORMAT,
        "corpus": {"name": corpus.name, "source": corpus.source, "files": corpus.files},
        "vocab": {"file": VOCAB_FILE, "sha256": vocab.sha256, "size": len(vocab),
                  "source": vocab_source},
        "store": {"file": STORE_FILE, "schema": "tff.simulation.datasets SQL client data",
                  "splits": list(SPLITS), "feature": FEATURE, "dtype": "int64",
                  "example_length": config.seq_len + 1, "escaped_client_ids": tally.escaped_ids},
        "seq_len": config.seq_len,
        "seed": config.seed,
        "heldout_fraction": config.heldout_fraction,
        "past_fraction": config.past_fraction,
        "clients": {"found": found, "kept": len(kept), "train": len(split.train),
                    "heldout": len(split.heldout)},
        "splits": {name: counts.to_json() for name, counts in tally.splits.items()},
        "client_sizes": {group: sizes.to_json() for group, sizes in tally.sizes.items()},
        "caps": texts.caps,
        "packing": {"mode": config.pack, "means": PACK_MODES[config.pack],
                    "packed_splits": list(PACKED_SPLITS) if config.pack != "none" else [],
                    "segments_feature": SEGMENTS if config.pack != "none" else None,
                    "train_padding_fraction": {mode: padding_fraction(*counts) for mode, counts
                                               in tally.train_padding.items()}},
        "skipped": log.counts(),
        "dropped_clients": {"max_clients": found - len(kept),
                            "without_texts": log.clients_without_texts},
        "canaries": None if planted is None else {
            "count": len(planted.canaries), "copies": sum(c.repeats for c in planted.canaries),
            "repeats": sorted({c.repeats for c in planted.canaries}), "digits": planted.digits,
            "file": CANARIES_FILE},
        "config": {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                   for k, v in asdict(config).items()},
    }
    if planted is not None:
        planted.save(out / CANARIES_FILE)
    vocab.save(out / VOCAB_FILE)
    _write_json(out / STATS_FILE, stats)
    return PrepareResult(stats, log.warning())
