"""The raw texts behind a prepared client store.

The store keeps token windows, but the device measurements need what a
user types (text before the cursor, sent messages) and the communication
figures need each client's raw text size. Both come from reading the
corpus again with the settings recorded in the store's `stats.json`,
through the same `read_and_split` and `client_texts` (the caps) that
`prepare` uses, so the clients and their past/future texts are exactly the
store's.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from datasets.corpus import ReadLog
from datasets.prepare import PrepareConfig, client_texts, read_and_split
from datasets.store import ClientStore, store_client_id


@dataclass
class StoreTexts:
    """Texts by client id as stored (`store_client_id`), in their original order."""

    train: dict[str, list[str]]
    heldout: dict[str, tuple[list[str], list[str]]]  # (past, future)

    def heldout_texts(self) -> list[str]:
        """Every held-out client's texts, past and future, client by client."""
        return [text for past, future in self.heldout.values() for text in past + future]

    def utf8_bytes(self, client_ids) -> int:
        """Raw UTF-8 bytes of these training clients' texts (what a server would collect)."""
        return sum(len(text.encode("utf-8")) for c in client_ids for text in self.train[c])


def read_store_texts(store: ClientStore) -> StoreTexts:
    recorded = store.stats["config"]
    config = PrepareConfig(**{**recorded, "out": Path(recorded["out"])})
    with contextlib.redirect_stderr(io.StringIO()):  # the readers' progress bars: read before
        corpus, _, split = read_and_split(config, ReadLog(skip_bad_lines=config.skip_bad_lines))
    texts = client_texts(config, corpus.clients, split)
    return StoreTexts({store_client_id(c): t for c, t in texts.train.items()},
                      {store_client_id(c): t for c, t in texts.heldout.items()})
