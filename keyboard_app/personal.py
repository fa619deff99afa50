"""Opt-in learning from the user's own messages, kept in a private directory on the device.

Off by default. While it is on, every sent message is appended to
`messages.jsonl` in the learner's directory (created 0700, files 0600), and
after every N new messages -- or when the user asks -- a background thread
fine-tunes the model's personal layer on them. Nothing leaves the device:
the training runs in the same LiteRT model the keyboard uses.

Two things are personal: the fine-tuned personal layer of the model, and
the user's own words (`models/user_history.py`, counts of the words and
short phrases of the stored messages, mixed into the strip; it can suggest
names the shared vocabulary lacks). A pass trains a second `Predictor` on
the same model directory, starting from the federated model, over the
stored messages except the newest ones; those it holds back to check the
result ("never worse"): the simulated typist of `models/typist.py` (the
rule `fedkb eval` uses) types them with the shared model, with the user's
words alone (counted on the same messages the layer learns from), and with
the user's words plus the personal layer in use or the new one. The option
that needs the fewest keystrokes is used; a tie keeps the simpler one, in
the order of `CHECK_CHOICES`, the shared model first. While the user's
words are in use they are counted over all stored messages, and each sent
message counts at once. With fewer than `LearnerConfig.holdout_messages` messages to hold
back, nothing is learned and the shared model stays. The held-back
messages are learned by a later pass, once newer ones replace them. The live
predictor the keyboard asks for suggestions only receives the finished
weights (one `set_personal`). So typing never waits for training, the
suggestions never show a half-trained layer, and a new layer is a
function of the stored messages (the same messages and seed give the same
weights; the check may keep the layer already in use instead). The weights are saved with `get_personal` (np.savez) and
restored at start with `set_personal`.

A new shared model: the personal adapter acts on the hidden state of the
model it was learned on, so weights saved for another model (by the
SHA-256 of its file) are deleted at start, with a notice, and the layer is
re-fitted from the stored messages (if learning is on), through the same
check; until then the shared model is used.

Switching learning off stops collecting at once; what was learned stays
in use until "forget", which deletes the messages, the weights and the
statistics and gives the federated model back. A damaged file is moved
aside (renamed `<name>.damaged-<time>` in the same private directory) with
a notice, and the keyboard starts with the federated model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyboard_app.predictor import ModelDirError, Predictor
from models.typist import Tally, type_message, type_messages
from models.user_history import HistoryConfig, UserHistory

log = logging.getLogger(__name__)

MESSAGES_FILE = "messages.jsonl"
WEIGHTS_FILE = "personal_weights.npz"
STATE_FILE = "state.json"
OWN_FILES = (MESSAGES_FILE, WEIGHTS_FILE, STATE_FILE)
DAMAGED_SUFFIX = ".damaged-"
STATE_FORMAT = "fedkb-personal"
STATE_VERSION = 1
# Stored next to the weights: the model they were learned on (model_card file.sha256).
MODEL_KEY = "model_sha256"


@dataclass(frozen=True)
class LearnerConfig:
    """How much and how often to fine-tune."""

    fine_tune_every: int = 5  # a background pass after this many new messages
    epochs: int = 5  # passes over the stored messages per fine-tuning ...
    min_steps: int = 40  # ... but at least this many train steps (few messages: more epochs)
    max_epochs: int = 50
    max_messages: int = 500  # the newest messages a pass learns from
    seed: int = 0  # the order of examples (same messages + seed -> same weights)
    # Never worse: the newest messages a pass holds back to check its result, at least
    # `holdout_messages` (with fewer, the shared model stays), else `holdout_fraction` of
    # the stored ones, at most `max_holdout_messages`.
    holdout_messages: int = 10
    holdout_fraction: float = 0.2
    max_holdout_messages: int = 50
    history: HistoryConfig = HistoryConfig()  # how much the user's own words weigh
    # Whether a pass also fine-tunes the model's personal layer (vocabulary bias + rank-4
    # adapter) and offers it to the check. Off: measured on 67 held-out chitchat users
    # (README, personalization lever table) the layer alone lost 1.4% strip top-3 and made 22%
    # of users worse, added nothing beside the user's own words (+20.8% either way), and after
    # a few similar messages it moved unrelated contexts ("the -> game" everywhere, issue 12),
    # while the user's words change only contexts the user wrote. On for experiments.
    train_layer: bool = False

    def __post_init__(self):
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.max_holdout_messages < self.holdout_messages:
            raise ValueError("max_holdout_messages must be at least holdout_messages")
        for name in ("fine_tune_every", "epochs", "max_epochs", "max_messages", "holdout_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")

    def holdout(self, stored: int) -> int:
        """How many of `stored` messages a pass holds back (0: too few, nothing is learned)."""
        held = min(self.max_holdout_messages, max(self.holdout_messages,
                                                  math.floor(self.holdout_fraction * stored)))
        return held if stored > held else 0

    @property
    def min_messages(self) -> int:
        """The fewest stored messages a pass learns from (one to learn, the rest held back)."""
        return self.holdout_messages + 1


@dataclass
class PersonalStats:
    """What the info panel shows about personalization. Counts only, never text."""

    messages_learned: int = 0  # messages the personal layer in use learned from (0: the shared model)
    fine_tunes: int = 0
    last_loss: float | None = None  # mean loss of the last train step of the last pass
    last_seconds: float | None = None
    # Completed words, and how many of them were tapped in the strip or shown in it
    # while being typed, before and after the keyboard was personalized.
    words_before: int = 0
    hits_before: int = 0
    words_after: int = 0
    hits_after: int = 0
    # The never-worse check of the last pass: what it chose (CHECK_CHOICES), on how many
    # held-back messages, and the keystroke savings rate of the shared model and of the
    # best personal option on them (the one in use, unless the shared model won).
    check: str | None = None
    check_messages: int = 0
    ksr_shared: float | None = None
    ksr_personal: float | None = None

    def hit_rate(self, personalized: bool) -> float | None:
        words, hits = ((self.words_after, self.hits_after) if personalized
                       else (self.words_before, self.hits_before))
        return hits / words if words else None

    @classmethod
    def from_json(cls, data: dict) -> "PersonalStats":
        stats = cls()
        for field in dataclasses.fields(cls):
            if field.name not in data:
                continue
            value = data[field.name]
            if field.name in ("last_loss", "last_seconds", "ksr_shared", "ksr_personal"):
                ok = value is None or isinstance(value, (int, float))
            elif field.name == "check":
                ok = value is None or value in CHECK_CHOICES
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise ValueError(f"stats.{field.name} is {value!r}")
            setattr(stats, field.name, value)
        return stats


# What a pass's never-worse check can choose, simplest first (a tie goes to the earlier one):
# the shared model, the user's words alone, the user's words with the new personal layer or
# with the one already in use; or nothing (fewer than LearnerConfig.holdout_messages to hold
# back).
SHARED, HISTORY, NEW, PREVIOUS, TOO_FEW = "shared", "history", "new", "previous", "too_few"
CHECK_CHOICES = (SHARED, HISTORY, NEW, PREVIOUS, TOO_FEW)
WITH_HISTORY = (HISTORY, NEW, PREVIOUS)  # the choices that mix in the user's words


@dataclass(frozen=True)
class FineTuneResult:
    """One fine-tuning pass and its never-worse check."""

    messages: int  # messages trained on
    examples: int
    epochs: int
    loss: float  # nan when nothing was trained
    seconds: float
    applied: bool  # False when there was nothing to do or the data was forgotten meanwhile
    choice: str = TOO_FEW  # one of CHECK_CHOICES
    heldout: int = 0  # the newest messages held back to check the result
    characters: int = 0  # their characters, as the typist types them
    keystrokes: dict = dataclasses.field(default_factory=dict)  # choice -> keystrokes

    @property
    def adopted(self) -> bool:
        """The new personal layer is in use."""
        return self.applied and self.choice == NEW

    def ksr(self, name: str) -> float | None:
        if name not in self.keystrokes or not self.characters:
            return None
        return 1 - self.keystrokes[name] / self.characters


class PersonalLearner:
    """The opt-in learner of one user: its private directory, its messages and its thread.

    Thread-safe: the UI thread calls the public methods, a worker thread
    fine-tunes. `on_update` is called on the worker thread after each
    background pass (the Kivy layer hops to the main thread from there).
    """

    def __init__(self, predictor: Predictor, data_dir: str | Path,
                 config: LearnerConfig = LearnerConfig(),
                 on_update: Callable[[], None] | None = None):
        self.predictor = predictor
        self.data_dir = Path(data_dir)
        self.config = config
        self.on_update = on_update
        self.notices: list[str] = []
        self._lock = threading.RLock()
        self._train_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._rerun = False
        self._generation = 0  # bumped by forget(): a pass from before it is discarded
        self._trainer: Predictor | None = None
        self._learning = False
        self._messages: list[str] = []
        self._history: UserHistory | None = None  # the user's words, while in use
        self._learned_through = 0  # stored messages the last pass considered
        self.stats = PersonalStats()
        self._layer = False  # a personal layer is in the live predictor
        self._model_sha = str(predictor.model_card["file"]["sha256"])
        # A new shared model arrived since the last pass: re-fit on the stored messages.
        self.refit_pending = False
        self._state_model_sha = self._model_sha  # the model of the last pass (state.json)
        if self.data_dir.is_dir():
            self._restore()
        with self._lock:
            self._maybe_start_locked()

    # -- state -----------------------------------------------------------------

    @property
    def learning(self) -> bool:
        return self._learning

    @property
    def personalized(self) -> bool:
        """The suggestions are personal: a personal layer or the user's words are in use."""
        return self._layer or self._history is not None

    @property
    def busy(self) -> bool:
        """True while a background pass runs."""
        worker = self._worker
        return worker is not None and worker.is_alive()

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    @property
    def unlearned(self) -> int:
        """Stored messages the current weights have not seen."""
        with self._lock:
            return max(0, len(self._messages) - self._learned_through)

    def set_learning(self, on: bool) -> None:
        """Opt in (creates the private directory) or out (stops collecting at once)."""
        with self._lock:
            self._learning = bool(on)
            if on:
                self._ensure_dir()
            if self.data_dir.is_dir():
                self._save_state()
            if on and self.refit_pending:  # a new shared model arrived while learning was off
                self._maybe_start_locked()

    def add_message(self, text: str) -> bool:
        """Stores a sent message if learning is on; True when it was stored."""
        text = text.strip()
        with self._lock:
            if not self._learning or not text:
                return False
            self._ensure_dir()
            line = json.dumps({"text": text, "time": round(time.time())}, ensure_ascii=False)
            fd = os.open(self.data_dir / MESSAGES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            self._messages.append(text)
            if self._history is not None:
                self._history.add(text)  # the user's words learn at once
            self._maybe_start_locked()
            return True

    def record_word(self, hit: bool) -> None:
        """Counts one completed word for the hit rate (before or after personalization)."""
        with self._lock:
            if self.personalized:
                self.stats.words_after += 1
                self.stats.hits_after += int(hit)
            else:
                self.stats.words_before += 1
                self.stats.hits_before += int(hit)

    # -- fine-tuning -------------------------------------------------------------

    def personalize_now(self) -> bool:
        """Starts a background pass over the stored messages; False when there are none."""
        with self._lock:
            if not self._messages:
                return False
            if self.busy:
                self._rerun = True
            else:
                self._start_worker_locked()
            return True

    def personalize_blocking(self) -> FineTuneResult:
        """One pass on the calling thread, after any background pass (for tests and `fedkb bench`)."""
        self.wait()
        with self._lock:
            generation, messages, stored = self._snapshot_locked()
        result, weights = self._train(messages)
        return self._apply(generation, result, weights, stored)

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until no background pass runs (including one queued meanwhile); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            worker = self._worker
            if worker is None or not worker.is_alive():
                with self._lock:
                    if self._worker is None or not self._worker.is_alive():
                        return True
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            worker.join(remaining)

    def _maybe_start_locked(self) -> None:
        due = self.unlearned >= self.config.fine_tune_every or (self.refit_pending and self._messages)
        if self._learning and due:
            if self.busy:
                self._rerun = True
            else:
                self._start_worker_locked()

    def _snapshot_locked(self) -> tuple[int, list[str], int]:
        keep = self.config.max_messages + self.config.max_holdout_messages
        return (self._generation, self._messages[-keep:], len(self._messages))

    def _start_worker_locked(self) -> None:
        generation, messages, stored = self._snapshot_locked()
        self._rerun = False
        self._worker = threading.Thread(target=self._work, args=(generation, messages, stored),
                                        name="fedkb-personalize", daemon=True)
        self._worker.start()

    def _work(self, generation: int, messages: list[str], stored: int) -> None:
        try:
            result, weights = self._train(messages)
            self._apply(generation, result, weights, stored)
        except (ModelDirError, OSError, ValueError, RuntimeError) as e:
            self._notice(f"personalization failed: {e}")
        finally:
            with self._lock:
                again = self._rerun and self._messages
                self._worker = None
                if again:
                    self._start_worker_locked()
            if self.on_update is not None:
                self.on_update()

    def _train(self, messages: list[str]) -> tuple[FineTuneResult, dict | None]:
        """One pass: fine-tunes the trainer from the shared model on all but the newest
        messages, then the never-worse check on those. Returns the result and the chosen
        weights (None: the shared model)."""
        started = time.perf_counter()
        held = self.config.holdout(len(messages))
        if held == 0:  # too few to check a layer: the shared model stays
            return FineTuneResult(0, 0, 0, math.nan, time.perf_counter() - started,
                                  applied=True, choice=TOO_FEW), None
        learn, heldout = messages[:-held][-self.config.max_messages:], messages[-held:]
        with self._lock:
            previous = self.predictor.get_personal() if self._layer else None
        with self._train_lock:
            if self._trainer is None:
                self._trainer = Predictor(self.predictor.model_dir)
            trainer = self._trainer
            trainer.reset_personal()
            history = UserHistory(learn, self.config.history)
            tallies: dict[str, Tally] = {SHARED: Tally(), HISTORY: Tally()}
            for text in heldout:  # message by message: the second typing reuses the model's scores
                trainer.set_history(None)
                tallies[SHARED] += type_message(trainer, text, trainer.vocab)
                trainer.set_history(history)
                tallies[HISTORY] += type_message(trainer, text, trainer.vocab)
            shared = tallies[SHARED]
            if previous is not None:
                trainer.set_personal(previous)
                tallies[PREVIOUS] = type_messages(trainer, heldout, trainer.vocab)
                trainer.reset_personal()
            examples = (sum(len(trainer.training_examples(text)[1]) for text in learn)
                        if self.config.train_layer else 0)
            epochs, loss, new = 0, math.nan, None
            if examples:
                steps_per_epoch = math.ceil(examples / trainer.train_batch_size)
                epochs = min(self.config.max_epochs, max(
                    self.config.epochs, math.ceil(self.config.min_steps / steps_per_epoch)))
                loss = trainer.fine_tune(learn, epochs=epochs, seed=self.config.seed)
                new = trainer.get_personal()
                tallies[NEW] = type_messages(trainer, heldout, trainer.vocab)
        # The fewest keystrokes wins; a tie goes to the simpler choice (CHECK_CHOICES' order:
        # the new layer before the one in use, as it learned from more messages).
        keystrokes = {name: tally.keystrokes for name, tally in tallies.items()}
        choice = min(CHECK_CHOICES[:-1], key=lambda name: keystrokes.get(name, math.inf))
        weights = {NEW: new, PREVIOUS: previous}.get(choice)
        result = FineTuneResult(len(learn), examples, epochs, loss, time.perf_counter() - started,
                                applied=True, choice=choice, heldout=held,
                                characters=shared.characters, keystrokes=keystrokes)
        return result, weights

    def _apply(self, generation: int, result: FineTuneResult, weights: dict | None,
               stored: int) -> FineTuneResult:
        """Puts a pass's choice in use in the live predictor and saves it, unless forgotten meanwhile."""
        with self._lock:
            if generation != self._generation:
                return dataclasses.replace(result, applied=False)
            self._learned_through = stored
            self._state_model_sha = self._model_sha
            self._ensure_dir()
            stats = self.stats
            if result.choice == TOO_FEW and self.personalized:  # a layer in use stays
                self._save_state()
                return result
            self.refit_pending = False
            stats.check = result.choice
            stats.check_messages = result.heldout
            stats.ksr_shared = result.ksr(SHARED)
            personal = [name for name in WITH_HISTORY if name in result.keystrokes]
            stats.ksr_personal = (result.ksr(min(personal, key=result.keystrokes.get))
                                  if personal else None)  # the best personal option
            if result.messages:
                stats.fine_tunes += 1
                stats.last_loss = float(result.loss) if math.isfinite(result.loss) else None
                stats.last_seconds = round(result.seconds, 3)
            if result.choice == NEW:
                self.predictor.set_personal(weights)
                self._layer = True
                self._save_weights(weights)
            elif result.choice != PREVIOUS:  # the shared model, or the user's words alone
                self.predictor.reset_personal()
                self._layer = False
                (self.data_dir / WEIGHTS_FILE).unlink(missing_ok=True)
            if result.choice != PREVIOUS:
                stats.messages_learned = result.messages if result.choice in WITH_HISTORY else 0
            self._use_history(result.choice in WITH_HISTORY)
            self._save_state()
            return result

    def _use_history(self, on: bool) -> None:
        """Mixes the user's words, counted over all stored messages, into the live suggestions."""
        self._history = UserHistory(self._messages, self.config.history) if on else None
        self.predictor.set_history(self._history)

    # -- forgetting ---------------------------------------------------------------

    def forget(self) -> None:
        """Deletes stored messages, personal weights and statistics: the federated model again.

        A pass running meanwhile finishes on its own copy and is discarded.
        The learning switch keeps its position.
        """
        with self._lock:
            self._generation += 1
            self._rerun = False
            if self.data_dir.is_dir():
                for path in self.data_dir.iterdir():
                    if _is_own_file(path.name):
                        path.unlink()
            self._messages = []
            self._learned_through = 0
            self.stats = PersonalStats()
            self.refit_pending = False
            self._state_model_sha = self._model_sha
            self.notices = []
            self.predictor.reset_personal()
            self._layer = False
            self._use_history(False)
            if self._learning:
                self._save_state()
            elif self.data_dir.is_dir() and not any(self.data_dir.iterdir()):
                self.data_dir.rmdir()

    def close(self, timeout: float = 10.0) -> None:
        """Waits for a running pass and saves the statistics (at app exit)."""
        self.wait(timeout)
        with self._lock:
            if self.data_dir.is_dir():
                self._save_state()

    # -- files ----------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        """The private directory: created if needed, always 0700 (the umask may allow more)."""
        make_private_dir(self.data_dir)
        os.chmod(self.data_dir, 0o700)

    def _write_private(self, name: str, write: Callable) -> None:
        """Writes a 0600 file atomically: a crash leaves the old file or the new one."""
        path = self.data_dir / name
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)

    def _save_state(self) -> None:
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "learning": self._learning,
                 "learned_through": self._learned_through, MODEL_KEY: self._state_model_sha,
                 "stats": dataclasses.asdict(self.stats)}
        data = (json.dumps(state, indent=1) + "\n").encode("utf-8")
        self._write_private(STATE_FILE, lambda f: f.write(data))

    def _save_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._write_private(WEIGHTS_FILE,
                            lambda f: np.savez(f, **weights, **{MODEL_KEY: np.array(self._model_sha)}))

    def _restore(self) -> None:
        """Reads the directory at start; damaged files are moved aside."""
        os.chmod(self.data_dir, 0o700)
        self._restore_state()
        self._restore_messages()
        self._restore_weights()
        self._learned_through = min(self._learned_through, len(self._messages))
        if self.refit_pending:
            self.stats.messages_learned = 0
            self.stats.check = None
            if not self._messages:  # nothing to re-fit on
                self.refit_pending = False
                self._state_model_sha = self._model_sha
        self._use_history(self.stats.check in WITH_HISTORY and bool(self._messages))

    def _restore_state(self) -> None:
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return
        try:
            state = json.loads(path.read_text("utf-8"))
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise ValueError("not a FedKB personalization state file")
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"version {state.get('version')!r}, this FedKB reads {STATE_VERSION}")
            if not isinstance(state.get("learning"), bool):
                raise ValueError(f"learning is {state.get('learning')!r}")
            learned = state.get("learned_through", 0)
            if not isinstance(learned, int) or learned < 0:
                raise ValueError(f"learned_through is {learned!r}")
            stats = PersonalStats.from_json(state.get("stats") or {})
            model = state.get(MODEL_KEY, self._model_sha)  # absent in older files
            if not isinstance(model, str):
                raise ValueError(f"{MODEL_KEY} is {model!r}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as e:
            self._move_aside(path, str(e), "learning is off until you switch it on again")
            return
        self._learning, self._learned_through, self.stats = state["learning"], learned, stats
        self._state_model_sha = model
        if model != self._model_sha:  # the shared model was in use, and a new one arrived
            self.refit_pending = True

    def _restore_messages(self) -> None:
        path = self.data_dir / MESSAGES_FILE
        if not path.exists():
            return
        messages = []
        try:
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        text = record["text"]
                        if not isinstance(text, str):
                            raise TypeError(f"text is {type(text).__name__}")
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise ValueError(f"line {number}: not a message record ({e})") from None
                    messages.append(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            self._move_aside(path, str(e), "new messages are stored from now on")
            self._learned_through = 0
            return
        self._messages = messages

    def _restore_weights(self) -> None:
        path = self.data_dir / WEIGHTS_FILE
        if not path.exists():
            if self.stats.check in (NEW, PREVIOUS):  # a layer was in use: learn again
                self._layer_lost()
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            learned_on = str(arrays.pop(MODEL_KEY, "unknown"))
            if learned_on != self._model_sha:
                self._new_model(path)
                return
            self.predictor.set_personal(arrays)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, ModelDirError) as e:
            self._move_aside(path, str(e), "suggestions come from the federated model until the "
                             "next personalization")
            self._layer_lost()
            return
        self._layer = True

    def _layer_lost(self) -> None:
        """The layer the last check chose is gone: the shared model until the next pass, which
        learns every stored message again (the user's words were checked with that layer only)."""
        self._learned_through = 0
        self.stats.check = None
        self.stats.messages_learned = 0

    def _new_model(self, weights: Path) -> None:
        """Weights of another model: of no use on this one (its hidden state differs); re-fit."""
        weights.unlink()
        self.refit_pending = True
        self._learned_through = 0
        self._notice("A new shared model arrived. Your personal layer belonged to the old one, "
                     "so suggestions come from the new shared model until it is "
                     + ("re-fitted on your stored messages." if self._learning else
                        "re-fitted on your stored messages (switch learning on)."))

    def _move_aside(self, path: Path, problem: str, consequence: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}{stamp}-{n}")
        os.replace(path, target)
        self._notice(f"{path}: cannot be used ({problem}); moved to {target.name}; {consequence}")

    def _notice(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self.notices.append(message)


def make_private_dir(path: str | Path) -> None:
    """Creates `path` and its missing parents, each 0700 whatever the umask; existing ones stay as they are."""
    missing = []
    path = Path(path)
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)


def _is_own_file(name: str) -> bool:
    """A file the learner wrote: its own files, their leftovers (.tmp) and damaged copies."""
    return name.split(DAMAGED_SUFFIX)[0].removesuffix(".tmp") in OWN_FILES


def personalizer(model_dir: str | Path, work_dir: str | Path,
                 config: LearnerConfig = LearnerConfig()) -> Callable[[list[str]], Predictor]:
    """`personalize(past) -> Predictor`: the app's "Personalize now" for one user after another.

    For `fedkb eval --personalize` and `fedkb bench`: each call forgets the
    previous user, stores `past` as sent messages in `work_dir` (the
    learner's private directory), runs one blocking pass with the
    never-worse check and returns the predictor with its choice in use.
    The app's code path, on LiteRT; only the background passes are off.
    """
    predictor = Predictor(model_dir)
    learner = PersonalLearner(predictor, work_dir,
                              dataclasses.replace(config, fine_tune_every=10**9))
    learner.set_learning(True)

    def personalize(past: list[str]) -> Predictor:
        learner.forget()
        for text in past:
            learner.add_message(text)
        learner.personalize_blocking()
        return predictor

    return personalize
