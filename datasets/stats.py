"""Counting what `prepare` writes, and printing it for `fedkb data stats`.

Tokens are the ids of the `<bos> ... <eos>` streams; the out-of-vocabulary
rate is the share of `<oov>` among the tokens that are not sentence markers
(words and punctuation), since `<bos>`/`<eos>` are never out of vocabulary.
Raw bytes are the UTF-8 size of the texts: what centralized training would
have to collect from the phones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from datasets.examples import pad_count
from datasets.vocab import BOS_ID, EOS_ID, OOV_ID

QUANTILES = (("min", 0.0), ("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("max", 1.0))
SIZE_MEASURES = ("texts", "tokens", "examples")


def quantiles(values: Sequence[int]) -> dict[str, float]:
    """min, p10, median, p90, max (linear interpolation, like numpy's default)."""
    if not values:
        return {name: 0 for name, _ in QUANTILES}
    ordered = sorted(values)
    result = {}
    for name, q in QUANTILES:
        position = q * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
        result[name] = int(value) if float(value).is_integer() else round(value, 2)
    return result


@dataclass
class SplitCounts:
    """Totals of one split of the store."""

    clients: int = 0
    texts: int = 0
    tokens: int = 0
    marker_tokens: int = 0
    oov_tokens: int = 0
    examples: int = 0
    example_ids: int = 0  # examples x (T+1)
    pad_ids: int = 0  # of those, `<pad>`
    utf8_bytes: int = 0

    def add_text(self, text: str, ids: Sequence[int]) -> None:
        self.texts += 1
        self.tokens += len(ids)
        self.marker_tokens += sum(1 for i in ids if i == BOS_ID or i == EOS_ID)
        self.oov_tokens += sum(1 for i in ids if i == OOV_ID)
        self.utf8_bytes += len(text.encode("utf-8"))

    def add_windows(self, window_list: Sequence[Sequence[int]]) -> None:
        self.examples += len(window_list)
        self.example_ids += sum(len(w) for w in window_list)
        self.pad_ids += pad_count(window_list)

    def to_json(self) -> dict:
        result = asdict(self)
        words = self.tokens - self.marker_tokens
        result["oov_rate"] = round(self.oov_tokens / words, 6) if words else 0.0
        result["padding_fraction"] = padding_fraction(self.pad_ids, self.example_ids)
        return result


def padding_fraction(pad_ids: int, example_ids: int) -> float:
    """The share of `<pad>` among the ids of the stored windows."""
    return round(pad_ids / example_ids, 4) if example_ids else 0.0


@dataclass
class ClientSizes:
    """Per-client texts, tokens and examples of one group of clients (train or held-out)."""

    texts: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)

    def add(self, texts: int, tokens: int, examples: int) -> None:
        self.texts.append(texts)
        self.tokens.append(tokens)
        self.examples.append(examples)

    def to_json(self) -> dict:
        return {measure: quantiles(getattr(self, measure)) for measure in SIZE_MEASURES}


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_stats(stats: dict) -> str:
    """The human-readable summary `fedkb data stats` prints."""
    corpus, vocab, skipped = stats["corpus"], stats["vocab"], stats["skipped"]
    dropped = stats["dropped_clients"]
    lines = [
        f"corpus: {corpus['name']} ({corpus['source']})",
        f"vocabulary: {vocab['size']:,} tokens from {vocab['source']}, sha256 {vocab['sha256'][:12]}",
        f"seq_len {stats['seq_len']}, seed {stats['seed']}, held-out fraction "
        f"{stats['heldout_fraction']}, past fraction {stats['past_fraction']}",
        "",
        f"{'split':<16}{'clients':>9}{'texts':>9}{'tokens':>11}{'examples':>10}{'OOV rate':>10}"
        f"{'raw text':>11}{'padding':>9}",
    ]
    for name, split in stats["splits"].items():
        lines.append(f"{name:<16}{split['clients']:>9,}{split['texts']:>9,}{split['tokens']:>11,}"
                     f"{split['examples']:>10,}{split['oov_rate']:>10.2%}"
                     f"{_bytes(split['utf8_bytes']):>11}{split.get('padding_fraction', 0):>9.1%}")
    lines += ["", f"{'per-client size':<19}" + "".join(f"{name:>9}" for name, _ in QUANTILES)]
    for group, sizes in stats["client_sizes"].items():
        for measure in SIZE_MEASURES:
            label = f"{group if measure == SIZE_MEASURES[0] else '':<8} {measure}"
            row = f"{label:<19}" + "".join(f"{sizes[measure][q]:>9}" for q, _ in QUANTILES)
            if measure == SIZE_MEASURES[0]:
                row += f"   ({stats['clients'][group]:,} clients)"
            lines.append(row)
    reasons = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in skipped["bad_lines_by_reason"].items())
    lines += [
        "",
        f"skipped: {skipped['bad_lines']} bad lines{f' ({reasons})' if reasons else ''}, "
        f"{skipped['empty_texts']} empty texts, {skipped['empty_files']} empty files, "
        f"{skipped['skipped_files']} other files",
        f"dropped clients: {dropped['max_clients']} by --max-clients, "
        f"{dropped['without_texts']} without usable texts",
    ]
    caps, packing = stats.get("caps"), stats.get("packing")
    if caps:
        removed, capped = caps["texts_removed"], caps["clients_capped"]
        train_share, future_share = (caps[f"largest_{g}_client_share"] for g in ("training", "future"))
        lines += [
            f"cap --max-texts-per-client {caps['max_texts_per_client'] or 'none'}: removed "
            f"{removed['train']:,} texts of {capped['train']} training clients and "
            f"{removed['heldout']:,} of {capped['heldout']} held-out clients; the largest client "
            f"has {train_share['after']:.1%} of training texts ({train_share['before']:.1%} "
            "without caps)",
            f"cap --max-future-texts {caps['max_future_texts'] or 'none'}: removed "
            f"{caps['future_texts_removed']:,} texts; the largest held-out client has "
            f"{future_share['after']:.1%} of future texts ({future_share['before']:.1%} without caps)"]
    if packing:
        padding = ", ".join(f"{share:.1%} with --pack {mode}"
                            for mode, share in packing["train_padding_fraction"].items())
        lines.append(f"packing: {packing['mode']}; <pad> share of training windows: {padding}")
    canaries = stats.get("canaries")
    if canaries:
        lines.append(f"canaries: {canaries['count']} planted ({canaries['copies']} copies, repeats "
                     f"{', '.join(map(str, canaries['repeats']))}; the secrets are in "
                     f"{canaries['file']}: keep it private)")
    return "\n".join(lines)
