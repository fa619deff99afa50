"""The vocabulary and the token-id layout every part of FedKB shares.

Ids: 0 ``<pad>``, 1 ``<oov>``, 2 ``<bos>``, 3 ``<eos>``, then punctuation,
then words. By default the words come from the public `wordfreq` list, so
the server never learns a word from anyone's private text. The vocabulary is
identified by the SHA-256 of its token list; every artifact records it.
Pure Python: the app loads vocabularies without TensorFlow.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from datasets.errors import FedKBError
from datasets.tokenizer import BOS, EOS, OOV, PAD, SPECIAL_TOKENS

PAD_ID, OOV_ID, BOS_ID, EOS_ID = range(4)
# Targets no loss, metric or on-device training counts (the one place for the rule): padding
# and sentence starts, which nobody types. `<oov>` and `<eos>` count.
IGNORED_TARGET_IDS = (PAD_ID, BOS_ID)
VOCAB_FILE = "vocab.json"  # a vocabulary's file in a client store, run or model directory
PUNCTUATION = tuple(".,!?;:'\"()-&/*%$#@+=")
RESERVED_TOKENS = SPECIAL_TOKENS + PUNCTUATION
DEFAULT_SIZE = 10_000


class VocabularyError(FedKBError, ValueError):
    """A vocabulary file that is missing, malformed or fails its hash."""


@dataclass(frozen=True)
class Vocabulary:
    """An ordered token list; a token's index is its id."""

    tokens: tuple[str, ...]
    _ids: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if tuple(self.tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise VocabularyError("vocabulary must start with the reserved tokens")
        if len(set(self.tokens)) != len(self.tokens):
            raise VocabularyError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._ids.get(token, OOV_ID)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self._ids.get(t, OOV_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def is_word(self, token_id: int) -> bool:
        """True for ids the keyboard may suggest (not special, not punctuation)."""
        return token_id >= len(RESERVED_TOKENS)

    @functools.cached_property
    def sha256(self) -> str:
        canonical = json.dumps(list(self.tokens), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_words(cls, words: Iterable[str], size: int = DEFAULT_SIZE) -> "Vocabulary":
        """Reserved tokens, then `words` in order, until `size` tokens."""
        if size <= len(RESERVED_TOKENS):
            raise ValueError(f"vocabulary size must exceed {len(RESERVED_TOKENS)}, got {size}")
        tokens = list(RESERVED_TOKENS)
        seen = set(tokens)
        for word in words:
            if word not in seen:
                tokens.append(word)
                seen.add(word)
                if len(tokens) == size:
                    break
        return cls(tuple(tokens))

    @classmethod
    def from_wordfreq(cls, size: int = DEFAULT_SIZE) -> "Vocabulary":
        """The most frequent English words (public data, no client text)."""
        import wordfreq

        # Ask for extra words: some are punctuation we already reserve.
        return cls.from_words(wordfreq.top_n_list("en", size * 2), size)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], size: int = DEFAULT_SIZE) -> "Vocabulary":
        """The most frequent tokens of `counts` (ties broken alphabetically)."""
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls.from_words((token for token, _ in ranked), size)

    def to_json(self) -> dict:
        return {
            "tokens": list(self.tokens),
            "special_tokens": {"pad": PAD_ID, "oov": OOV_ID, "bos": BOS_ID, "eos": EOS_ID},
            "size": len(self.tokens),
            "sha256": self.sha256,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), "utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Reads a `vocab.json`, checking that the stored hash matches its tokens."""
        path = Path(path)
        try:
            data = json.loads(path.read_text("utf-8"))
            vocab = cls(tuple(data["tokens"]))
            stored = data["sha256"]
        except FileNotFoundError:
            raise VocabularyError(f"{path}: vocabulary file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise VocabularyError(f"{path}: not a FedKB vocab.json ({e})") from None
        except VocabularyError as e:
            raise VocabularyError(f"{path}: {e}") from None
        if stored != vocab.sha256:
            raise VocabularyError(f"{path}: sha256 does not match its tokens; the file was changed")
        return vocab


def count_tokens(texts: Iterable[str]) -> collections.Counter:
    """Token counts over `texts`, for `--vocab-from-data`."""
    from datasets.tokenizer import words

    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(words(text))
    return counts


__all__ = [
    "BOS", "EOS", "OOV", "PAD", "PAD_ID", "OOV_ID", "BOS_ID", "EOS_ID", "IGNORED_TARGET_IDS",
    "VOCAB_FILE",
    "PUNCTUATION", "RESERVED_TOKENS", "Vocabulary", "VocabularyError", "count_tokens",
]
