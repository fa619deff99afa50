"""Training examples: a text's token ids cut into fixed-length windows.

Each text becomes the `<bos> ... <eos>` stream of `tokenizer.tokenize`,
encoded with the vocabulary, and cut into windows of T+1 ids (T = seq_len):
the model reads x = window[:-1] and predicts y = window[1:]. A text of at
most T+1 ids is one window, LEFT-padded with `<pad>`; a longer text is cut
into chunks of T+1 ids with stride T, so consecutive windows share one id
and every target is predicted exactly once; the last, shorter chunk is
left-padded too. The keyboard's `suggest` context is the last T ids before
the cursor, left-padded the same way, so training and inference see the
same shapes.

Packing (`fedkb data prepare --pack messages`): a client's consecutive
messages are joined into one stream and cut the same way, so a window holds
several short messages instead of one message and padding. A message in a
packed window then follows the earlier ones: an LSTM reads them through its
state, a context the app (which passes only the current message) never
gives. `packed_windows` therefore also returns, per window, the message
index of each id (1, 2, ... within the window; 0 at `<pad>`), which lets
training reset that context or mask it; without that a packed store trains
a context-carrying model. Pure Python.
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


def packed_windows(messages: Sequence[Sequence[int]], seq_len: int
                   ) -> list[tuple[list[int], list[int]]]:
    """(window, segments) of the client's messages joined in order, cut like one long text.

    `segments[i]` numbers the message that id i belongs to, from 1 for the
    window's first (possibly partial) message; 0 is `<pad>`.
    """
    ids = [i for message in messages for i in message]
    owner = [n + 1 for n, message in enumerate(messages) for _ in message]
    result = []
    for window, owners in zip(windows(ids, seq_len), windows(owner, seq_len)):
        first = min(o for o in owners if o != PAD_ID) - 1
        result.append((window, [o - first if o != PAD_ID else 0 for o in owners]))
    return result


def pad_count(window_list: Sequence[Sequence[int]]) -> int:
    """How many ids of these windows are `<pad>`."""
    return sum(1 for window in window_list for i in window if i == PAD_ID)
