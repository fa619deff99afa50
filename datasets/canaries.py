"""Canaries: random secrets planted in clients' text to measure memorization.

The Secret Sharer method (Carlini et al., 2019): before training, sentences
of a fixed format with a random secret, "my pin number is 4 8 1 5 2", are
inserted into a few training clients, each repeated a chosen number of
times (a user who typed their PIN once, or fifty times). After training,
`fedkb audit` ranks each canary's secret among all secrets of the same
format by the model's log-perplexity; a model that memorized it ranks it
near the top (`fl_pipeline/evaluation/audit.py`).

Each canary goes to its own training client, all its copies to that client
(at seeded random positions among the client's texts): one person's
secret, which user-level differential privacy is meant to protect however
often they typed it. `canaries.json` in the data directory is the
auditor's record of what was planted: the secrets themselves, so keep it
out of anything that is published. Pure Python.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import fedkb_command

CANARIES_FILE = "canaries.json"
FORMAT = "fedkb-canaries/1"
PREFIX = "my pin number is"
DIGITS = tuple("0123456789")


class CanaryError(FedKBError):
    """Canary settings that cannot be honoured, or a damaged canaries.json."""


@dataclass(frozen=True)
class Canary:
    secret: str  # the random digits, e.g. "48152"
    repeats: int  # copies inserted into the client's texts
    client_id: str  # the training client that holds them (as in the corpus)

    @property
    def text(self) -> str:
        return canary_text(self.secret)


def canary_text(secret: str) -> str:
    """The sentence for a secret: 'my pin number is 4 8 1 5 2'."""
    return f"{PREFIX} {' '.join(secret)}"


@dataclass(frozen=True)
class CanarySet:
    """What was planted: the format (prefix, number of digits) and the canaries."""

    digits: int
    canaries: tuple[Canary, ...]
    seed: int
    prefix: str = PREFIX

    @property
    def candidates(self) -> int:
        """Secrets of the format: the space a canary is ranked in."""
        return len(DIGITS) ** self.digits

    def to_json(self) -> dict:
        return {"format": FORMAT, "prefix": self.prefix, "digits": self.digits,
                "candidates": self.candidates, "seed": self.seed,
                "canaries": [{**asdict(c), "text": c.text} for c in self.canaries]}

    def save(self, path: Path) -> None:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n", "utf-8")
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> "CanarySet":
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("format") != FORMAT or data.get("prefix") != PREFIX:
                raise ValueError(f"not a {FORMAT} file with prefix {PREFIX!r}")
            canaries = tuple(Canary(str(c["secret"]), int(c["repeats"]), str(c["client_id"]))
                             for c in data["canaries"])
            digits = int(data["digits"])
            if any(len(c.secret) != digits or not c.secret.isdigit() for c in canaries):
                raise ValueError(f"a secret is not {digits} digits")
            return cls(digits=digits, canaries=canaries, seed=int(data["seed"]))
        except FileNotFoundError:
            raise CanaryError(f"{path}: not found; prepare the data with `"
                              f"{fedkb_command('data', 'prepare', '--canaries', 'N')}` to plant "
                              "canaries") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CanaryError(f"{path}: unreadable canary record ({e}); prepare the data again "
                              "with --canaries") from None


def plant(train_clients: Sequence[str], per_repeat: int, repeats: Sequence[int], digits: int,
          seed: int) -> CanarySet:
    """Chooses the secrets and the clients: `per_repeat` canaries for each repeat count,
    each in a different training client, all chosen by the seed."""
    if per_repeat < 1 or not repeats or any(r < 1 for r in repeats):
        raise CanaryError("--canaries and every --canary-repeats count must be at least 1")
    if not 1 <= digits <= 6:
        raise CanaryError(f"--canary-digits must be between 1 and 6, got {digits}")
    wanted = per_repeat * len(repeats)
    if wanted > len(train_clients):
        raise CanaryError(f"{wanted} canaries need as many training clients, the corpus has "
                          f"{len(train_clients)}; plant fewer (--canaries, --canary-repeats)")
    if wanted > len(DIGITS) ** digits:
        raise CanaryError(f"{wanted} canaries do not fit in {digits} digits; use more digits")
    rng = random.Random(f"fedkb-canaries/{seed}")
    clients = rng.sample(sorted(train_clients), wanted)
    secrets = rng.sample(range(len(DIGITS) ** digits), wanted)
    counts = [r for r in repeats for _ in range(per_repeat)]
    canaries = tuple(Canary(f"{s:0{digits}d}", r, c) for s, r, c in zip(secrets, counts, clients))
    return CanarySet(digits=digits, canaries=canaries, seed=seed)


def insert(texts: Sequence[str], canary: Canary, seed: int) -> list[str]:
    """The client's texts with the canary's copies at seeded random positions."""
    rng = random.Random(f"fedkb-canary-positions/{seed}/{canary.client_id}")
    result = list(texts)
    for _ in range(canary.repeats):
        result.insert(rng.randint(0, len(result)), canary.text)
    return result
