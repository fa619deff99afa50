"""The on-device next-word predictor: a model directory run by LiteRT alone.

`Predictor(model_dir)` checks the directory (model_dir.py), loads
`model.tflite` from a buffer into `ai_edge_litert`'s interpreter, checks its
signatures against the model card, and then offers what the keyboard needs:

- `suggest(text_before_cursor, k)`: the k words to show in the suggestion
  bar, most likely first, with the user's own words mixed in once
  `set_history` gave it a `models.user_history.UserHistory`;
- `logprobs`, `training_examples`, `train_step`, `fine_tune`: opt-in
  learning on the user's own typing, one Adam step at a time on the
  personal layer (the federated backbone stays frozen);
- `get_personal` / `set_personal` / `reset_personal`: persisting and
  forgetting what was learned.

Imports no TensorFlow (numpy, LiteRT, the shared tokenizer and the word
rules of `models/suggest.py` only): this is what runs on the phone. Calls are serialized by a lock, so the app may
fine-tune on a worker thread while the UI thread asks for suggestions.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from datasets.errors import first_line
from datasets.tokenizer import split_context, tokenize
from datasets.vocab import BOS_ID, IGNORED_TARGET_IDS, PAD_ID, Vocabulary
from keyboard_app.model_dir import ModelDirError, read_model_dir, reexport
from models.contract import MODEL_FILE, PERSONAL_TENSORS, SIGNATURES
from models.suggest import WordRanker, context_ids, display_form
from models.user_history import UserHistory

__all__ = ["ModelDirError", "PersonalWeightsError", "Predictor", "display_form"]

# What LiteRT's native code prints to stderr (fd 2) the first time a process
# runs a model: XNNPACK, its default CPU delegate, has no option to keep quiet.
_LITERT_INFO = b"INFO: Created TensorFlow Lite XNNPACK delegate"

# Only the tail of a long text is tokenized: the model reads the last T
# tokens, and no realistic T tokens span this many characters per token.
_TAIL_CHARS_PER_TOKEN = 64

# The contexts whose next-token scores are kept (V floats each: 64 x 10,000 x 4 B = 2.6 MB).
_CACHED_CONTEXTS = 64


class PersonalWeightsError(ModelDirError, ValueError):
    """Personal weights that do not fit this model (other names, shapes or dtypes)."""


@contextlib.contextmanager
def _without_litert_info():
    """Drops LiteRT's XNNPACK INFO line from fd 2; whatever else is written meanwhile is kept.

    (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES also silences it, but
    without XNNPACK a train step takes twice as long.)
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured if not line.startswith(_LITERT_INFO)]
            if kept:
                os.write(2, b"".join(kept))


class Predictor:
    """Next-word suggestions and personal learning over one model directory."""

    def __init__(self, model_dir: str | Path):
        checked = read_model_dir(model_dir)
        self.model_dir: Path = checked.path
        self.model_card: dict = checked.card
        self.vocab: Vocabulary = checked.vocab
        self.context_len: int = checked.context_len  # T
        self.train_batch_size: int = checked.train_batch_size  # B
        self._lock = threading.Lock()
        model_path = self.model_dir / MODEL_FILE
        try:
            # From the buffer already hashed, never from the path (see docs/DESIGN.md).
            self._interpreter = Interpreter(model_content=checked.model_bytes)
        except (ValueError, RuntimeError) as e:
            raise ModelDirError(f"{model_path}: LiteRT cannot load it ({first_line(e)}); "
                                f"{reexport(model_path.parent)}") from None
        expected = checked.expected_signatures()
        self._runners = self._signature_runners(expected, model_path)
        self._personal_specs = {name: shape for name, (_, shape)
                                in expected["get_personal"]["outputs"].items()}
        self._ranker = WordRanker(self.vocab)  # the word rules, shared with `fedkb eval`
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._history: UserHistory | None = None
        try:  # a first run: kernels that cannot run fail here, not in the UI
            with _without_litert_info():
                self._initial_personal = self.get_personal()
            self.logprobs([BOS_ID])
        except (ValueError, RuntimeError) as e:
            raise ModelDirError(f"{model_path}: LiteRT cannot run it ({first_line(e)}); "
                                f"{reexport(model_path.parent)}") from None

    def __repr__(self) -> str:
        return (f"Predictor({str(self.model_dir)!r}, vocab={len(self.vocab)}, "
                f"T={self.context_len}, B={self.train_batch_size})")

    # -- loading --------------------------------------------------------------

    def _signature_runners(self, expected: dict, model_path: Path) -> dict:
        """The four signature runners, after checking names, dtypes and shapes."""
        available = self._interpreter.get_signature_list()
        missing = [name for name in SIGNATURES if name not in available]
        if missing:
            raise ModelDirError(f"{model_path}: no signature {', '.join(missing)} (has "
                                f"{', '.join(sorted(available)) or 'none'}); not a `fedkb export` "
                                f"model, {reexport(model_path.parent)}")
        runners = {}
        for name in SIGNATURES:
            runner = self._interpreter.get_signature_runner(name)
            actual = {"inputs": runner.get_input_details(), "outputs": runner.get_output_details()}
            for side in ("inputs", "outputs"):
                want = expected[name][side]
                have = {tensor: (np.dtype(d["dtype"]).name, tuple(int(n) for n in d["shape_signature"]))
                        for tensor, d in actual[side].items()}
                if have != want:
                    raise ModelDirError(
                        f"{model_path}: signature {name} {side} are {_specs(have)}, the model card "
                        f"and vocabulary need {_specs(want)}; {reexport(model_path.parent)}")
            runners[name] = runner
        return runners

    # -- suggestions ----------------------------------------------------------

    def suggest(self, text_before_cursor: str, k: int = 3) -> list[str]:
        """The k most likely words to insert at the cursor, most likely first.

        After a space, a symbol or at the start: the next word. Inside a
        partly typed word: the most likely vocabulary words starting with
        it (case-insensitive), which include the typed word itself when it
        is already a complete word ("the" -> "the", "then", "there"). Never
        special tokens or punctuation. Fewer than k words when fewer match
        (a prefix no vocabulary word has gives []). Words come back
        lowercase, except "I" and its contractions ("I'm"); capitalizing a
        sentence's first word is the app's job.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        tokens, partial = self._split(text_before_cursor)
        logprobs = self._logprobs_cached(self._context_ids(self.vocab.encode(tokens)))
        history = self._history
        if history is None or history.weight == 0:
            return self._ranker.top_words(logprobs, partial, k)
        # The user's own words mixed in (models/user_history.py): the model's best words and the
        # user's compete on (1 - w) P_model + w P_user.
        ids = self._ranker.top_ids(logprobs, partial, k + history.config.candidates)
        words = [self.vocab.tokens[i] for i in ids]

        def model_probability(word: str) -> float:
            i = self.vocab.id(word)
            return float(np.exp(logprobs[i])) if self.vocab.is_word(i) else 0.0

        return [display_form(word) for word in
                history.rerank(words, model_probability, tokens, partial, k)]

    def set_history(self, history: UserHistory | None) -> None:
        """Mixes the user's own words into `suggest` (None: the model's words alone)."""
        self._history = history

    def _split(self, text: str) -> tuple[list[str], str]:
        """`split_context(text)`, tokenizing only the end of a long text.

        A tail cut at a space tokenizes like the full text except for its
        first sentence (which gains a <bos>), so when the tail still holds
        more than T tokens, its last T are the full text's.
        """
        limit = _TAIL_CHARS_PER_TOKEN * self.context_len
        if len(text) > limit:
            tail = text[-limit:]
            space = re.search(r"\s", tail)
            if space:
                tokens, partial = split_context(tail[space.end():])
                if len(tokens) > self.context_len:
                    return tokens, partial
        return split_context(text)

    def _context_ids(self, ids: Sequence[int]) -> np.ndarray:
        """The last T ids, left-padded with <pad>: int32 [T]."""
        return np.array(context_ids(ids, self.context_len), dtype=np.int32)

    def logprobs(self, context_ids: Sequence[int]) -> np.ndarray:
        """Log-probabilities float32 [V] of the next token after `context_ids`.

        Only the last T ids count; shorter contexts are left-padded with
        <pad>, as in training.
        """
        ids = np.asarray(list(context_ids))
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise ValueError(f"context ids must be integers in [0, {len(self.vocab)}), got {ids.tolist()}")
        return self._logprobs_cached(self._context_ids(ids.tolist())).copy()

    def _logprobs_cached(self, context: np.ndarray) -> np.ndarray:
        # Typing a word asks for the same context once per key press, and a backspace or the
        # never-worse check's second typing of a message asks for recent ones again.
        key = tuple(context.tolist())
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
            else:
                out = self._runners["suggest"](context=context[None, :])["logprobs"]
                self._cache[key] = np.array(out[0], dtype=np.float32)
                if len(self._cache) > _CACHED_CONTEXTS:
                    self._cache.popitem(last=False)
            return self._cache[key]

    def _forget_cache(self) -> None:
        self._cache.clear()

    # -- personal learning ----------------------------------------------------

    def training_examples(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(contexts int32 [N, T], targets int32 [N]) for every next-word position of a message.

        The message is tokenized like training data (``<bos> ... <eos>`` per
        sentence); each position's context is the T ids before it,
        left-padded, exactly what `suggest` sees at that point of typing.
        Positions whose target is <pad> or <bos> are left out.
        """
        ids = self.vocab.encode(tokenize(text))
        positions = [i for i in range(1, len(ids)) if ids[i] not in IGNORED_TARGET_IDS]
        contexts = np.zeros([len(positions), self.context_len], dtype=np.int32)
        for row, i in enumerate(positions):
            contexts[row] = self._context_ids(ids[:i])
        return contexts, np.array([ids[i] for i in positions], dtype=np.int32)

    def train_step(self, contexts: np.ndarray, targets: np.ndarray) -> float:
        """One Adam step of the personal layer on exactly B examples; returns their mean loss.

        Rows whose target is <pad> or <bos> count for nothing: pad a short
        batch with such rows.
        """
        B, T, V = self.train_batch_size, self.context_len, len(self.vocab)
        contexts, targets = np.asarray(contexts), np.asarray(targets)
        if contexts.shape != (B, T) or targets.shape != (B,):
            raise ValueError(f"train_step needs contexts [{B}, {T}] and targets [{B}], got "
                             f"{list(contexts.shape)} and {list(targets.shape)}")
        for name, array in (("contexts", contexts), ("targets", targets)):
            if array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= V:
                raise ValueError(f"{name} must be integer token ids in [0, {V})")
        with self._lock:
            loss = self._runners["train"](context=contexts.astype(np.int32),
                                          target=targets.astype(np.int32))["loss"]
            self._forget_cache()
        return float(loss)

    def fine_tune(self, text_messages: list[str], epochs: int = 1, *, seed: int = 0) -> float:
        """Trains the personal layer on the user's messages; returns the last step's loss.

        Each epoch visits every example once in an order fixed by `seed`,
        in batches of B; the last batch is filled with ignored rows.
        Returns nan when the messages hold no example (no step is taken).
        """
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        pairs = [self.training_examples(text) for text in text_messages]
        contexts = np.concatenate([c for c, _ in pairs] or [np.zeros([0, self.context_len], np.int32)])
        targets = np.concatenate([t for _, t in pairs] or [np.zeros([0], np.int32)])
        if len(targets) == 0:
            return math.nan
        B = self.train_batch_size
        rng = np.random.default_rng(seed)
        loss = math.nan
        for _ in range(epochs):
            order = rng.permutation(len(targets))
            for start in range(0, len(order), B):
                rows = order[start:start + B]
                batch_contexts = np.full([B, self.context_len], PAD_ID, dtype=np.int32)
                batch_targets = np.full([B], PAD_ID, dtype=np.int32)  # ignored unless filled
                batch_contexts[:len(rows)] = contexts[rows]
                batch_targets[:len(rows)] = targets[rows]
                loss = self.train_step(batch_contexts, batch_targets)
        return loss

    def get_personal(self) -> dict[str, np.ndarray]:
        """The personal layer's weights by name (float32 copies), for saving."""
        with self._lock:
            out = self._runners["get_personal"]()
        return {name: np.array(out[name], dtype=np.float32) for name in PERSONAL_TENSORS}

    def set_personal(self, weights: dict[str, np.ndarray]) -> None:
        """Restores weights from `get_personal` (of this model); restarts the optimizer."""
        if not isinstance(weights, dict) or set(weights) != set(PERSONAL_TENSORS):
            names = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
            raise PersonalWeightsError(f"personal weights must be {list(PERSONAL_TENSORS)}, got {names}")
        arrays = {}
        for name in PERSONAL_TENSORS:
            array = np.asarray(weights[name])
            want = self._personal_specs[name]
            if array.dtype != np.float32 or array.shape != want:
                raise PersonalWeightsError(
                    f"personal weight {name} must be float32 {list(want)}, got {array.dtype} "
                    f"{list(array.shape)}; they were saved for another model")
            if not np.all(np.isfinite(array)):
                raise PersonalWeightsError(f"personal weight {name} has NaN or infinite values")
            arrays[name] = np.ascontiguousarray(array)
        with self._lock:
            self._runners["set_personal"](**arrays)
            self._forget_cache()

    def reset_personal(self) -> None:
        """Forgets all personal learning: the federated model's predictions again."""
        self.set_personal(self._initial_personal)


def _specs(specs: dict) -> str:
    return "{" + ", ".join(f"{name}: {dtype} {list(shape)}" for name, (dtype, shape)
                           in sorted(specs.items())) + "}" if specs else "{}"
