"""Training examples: a text's token ids cut into fixed-length windows.

Each text becomes the `<bos> ... <eos>` stream of `tokenizer.tokenize`,
encoded with the vocabulary, and cut into windows of T+1 ids (T = seq_len):
the model reads x = window[:-1] and predicts y = window[1:]. A text of at
most T+1 ids is one window, LEFT-padded with `<pad>`; a longer text is cut
into chunks of T+1 ids with stride T, so consecutive windows share one id
and every target is predicted exactly once; the last, shorter chunk is
left-padded too. The keyboard's `suggest` context is the last T ids before
the cursor, left-padded the same way, so training and inference see the
same shapes. Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets.tokenizer import tokenize
from datasets.vocab import PAD_ID, Vocabulary


def encode_text(text: str, vocab: Vocabulary) -> list[int]:
    """The token ids of `text`: its sentences, each `<bos> ... <eos>`."""
    return vocab.encode(tokenize(text))


def windows(ids: Sequence[int], seq_len: int) -> list[list[int]]:
    """The windows of T+1 = seq_len + 1 ids that cover every target of `ids` once."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    width = seq_len + 1
    result = []
    for start in range(0, len(ids) - 1, seq_len):  # each window needs >= 2 ids
        chunk = list(ids[start:start + width])
        result.append([PAD_ID] * (width - len(chunk)) + chunk)
    return result
