"""Device: the exported model as the phone runs it (LiteRT, no TensorFlow).

On the model directory `fedkb export` wrote from the bench's federated run:

- `model.tflite` size;
- `Predictor.suggest` latency per call (tokenization, the `suggest`
  signature and prefix filtering) over real contexts: held-out texts cut at
  random characters, so some end inside a word and some after it;
- one `train` step (`Predictor.train_step` on B real examples);
- the app core's suggestion refresh per key press: `KeyboardSession`
  typing held-out messages one character at a time;
- a personalization pass over 50 messages with the app's settings
  (`PersonalLearner.personalize_blocking`);
- cold start to the first suggestions and the app core's resident memory,
  in a fresh process (`fl_pipeline.bench.cold_start`).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fl_pipeline.bench.config import BenchConfig
from fl_pipeline.bench.figures import Budget, Figures

WARMUP_CALLS = 50


def real_contexts(texts: list[str], n: int, seed: int) -> list[str]:
    """`n` texts-before-the-cursor: random held-out texts cut at a random character."""
    rng = np.random.default_rng(seed)
    texts = [text for text in texts if text.strip()]
    picks = rng.integers(len(texts), size=n)
    return [texts[i][:int(rng.integers(len(texts[i]) + 1))] for i in picks]


def one_line(text: str) -> str:
    """A text as a chat message typed on one line."""
    return " ".join(text.split())


def _call_seconds(fn, items) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_device(model_dir: Path, heldout_texts: list[str], config: BenchConfig,
                   work_dir: Path, figures: Figures) -> None:
    from keyboard_app.personal import LearnerConfig
    from keyboard_app.predictor import Predictor
    from keyboard_app.session import KeyboardSession

    card = json.loads((model_dir / "model_card.json").read_text("utf-8"))
    model_sizes = {name: card["model"][name] for name in
                   ("vocab_size", "context_len", "embedding_dim", "lstm_units", "parameters")}
    model_sizes["quantization"] = card["file"]["quantization"]
    size = (model_dir / "model.tflite").stat().st_size
    figures.add("device.model_mb", "model.tflite size", size / 1e6, "MB",
                f"bytes of {model_dir.name}/model.tflite written by fl_pipeline.export.export_run "
                "(`fedkb export`)", sizes=model_sizes,
                budget=Budget("<=", 2.0, "issue 5; Gboard's production model is 1.4 MB"))

    predictor = Predictor(model_dir)
    contexts = real_contexts(heldout_texts, config.suggest_contexts, config.seed)
    _call_seconds(predictor.suggest, contexts[:WARMUP_CALLS])
    latency_ms = [1e3 * s for s in _call_seconds(predictor.suggest, contexts)]
    how = (f"Predictor.suggest(text, k=3) per call over {len(contexts)} held-out texts cut at "
           f"random characters (after {WARMUP_CALLS} warm-up calls); includes tokenization and "
           "prefix filtering")
    for q in (50, 95, 99):
        figures.percentile(f"device.suggest_ms_p{q}", f"suggest latency p{q}", latency_ms, q, "ms",
                           how, sizes=model_sizes,
                           budget=Budget("<=", 5, "issue 5") if q == 99 else None)
    figures.add_series("suggest_latency", list(range(len(latency_ms))), latency_ms, "call", "ms")

    B = predictor.train_batch_size
    examples = [predictor.training_examples(text) for text in heldout_texts]
    all_contexts = np.concatenate([c for c, _ in examples])
    all_targets = np.concatenate([t for _, t in examples])
    rows = [np.arange(i * B, (i + 1) * B) % len(all_targets) for i in range(config.train_steps)]
    batches = [(all_contexts[r], all_targets[r]) for r in rows]
    train_ms = [1e3 * s for s in _call_seconds(lambda b: predictor.train_step(*b), batches)]
    predictor.reset_personal()
    figures.timing("device.train_step_ms", f"one `train` step (B = {B})", train_ms, "ms",
                   f"Predictor.train_step on {len(batches)} batches of {B} real (context, next "
                   "token) pairs from held-out texts", sizes=model_sizes,
                   budget=Budget("<=", 30, "issue 5"))

    session = KeyboardSession.open(model_dir, work_dir / "typing-user")
    typed, refresh_ms = 0, []
    for message in itertools.cycle(one_line(t) for t in heldout_texts):
        for char in message:
            started = time.perf_counter()
            session.type_text(char)
            refresh_ms.append(1e3 * (time.perf_counter() - started))
        session.send()
        typed += len(message)
        if typed >= config.refresh_keystrokes:
            break
    session.close()
    figures.percentile("device.refresh_ms_p95", "suggestion refresh per key press, p95",
                       refresh_ms, 95, "ms",
                       f"KeyboardSession.type_text(one character) over {len(refresh_ms)} key "
                       "presses typing held-out messages (keyboard state + "
                       "refresh_suggestions)", sizes=model_sizes,
                       budget=Budget("<=", 16, "issue 6: one frame at 60 Hz"))

    no_background = LearnerConfig(fine_tune_every=10**9)  # the app's settings, passes on demand
    session = KeyboardSession.open(model_dir, work_dir / "fine-tune-user",
                                   learner_config=no_background)
    session.learner.set_learning(True)
    messages = list(itertools.islice(itertools.cycle(one_line(t) for t in heldout_texts),
                                     config.fine_tune_messages))
    for message in messages:
        session.learner.add_message(message)
    passes = [session.learner.personalize_blocking() for _ in range(config.fine_tune_repetitions)]
    session.close()
    figures.timing("device.fine_tune_s", f"personalization pass over {len(messages)} messages",
                   [p.seconds for p in passes], "s",
                   "PersonalLearner.personalize_blocking() with the app's LearnerConfig "
                   f"(the never-worse check; personal layer {'on' if no_background.train_layer else 'off'}: "
                   f"{passes[0].examples} examples, {passes[0].epochs} epochs)",
                   sizes={**model_sizes, "messages": len(messages), "examples": passes[0].examples,
                          "epochs": passes[0].epochs},
                   budget=Budget("<", 2, "issue 6; runs in the background"))

    cold_start(model_dir, work_dir, config, figures, model_sizes)


def cold_start(model_dir: Path, work_dir: Path, config: BenchConfig, figures: Figures,
               model_sizes: dict) -> None:
    """Fresh processes from start to first suggestions, and their resident memory."""
    runs = []
    for i in range(config.cold_starts):
        started_wall = time.time()
        done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.cold_start",
                               str(model_dir), str(work_dir / f"cold-user-{i}")],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["tensorflow_imported"]:
            raise RuntimeError("the app core imported TensorFlow in the cold-start process")
        runs.append({**result, "from_process_start": result["ready_wall_time"] - started_wall})
    how = ("python -m fl_pipeline.bench.cold_start MODEL_DIR in a fresh process: from starting "
           "the process to keyboard_app.session.cold_start's first suggestions (imports, model "
           "checks, LiteRT interpreter)")
    figures.timing("device.cold_start_s", "cold start to first suggestion",
                   [r["from_process_start"] for r in runs], "s", how, sizes=model_sizes,
                   budget=Budget("<=", 3, "issue 6"))
    figures.timing("device.open_model_s", "of which opening the model (session.cold_start)",
                   [r["cold_start_seconds"] for r in runs], "s",
                   "keyboard_app.session.cold_start(model_dir, user_dir) in the same processes",
                   sizes=model_sizes)
    figures.timing("device.app_rss_mb", "app core resident memory after typing a sentence",
                   [r["rss_bytes_after_typing"] / 1e6 for r in runs], "MB",
                   "psutil RSS of the cold-start process after its first suggestions and "
                   "typing one sentence (no TensorFlow, no Kivy window)", sizes=model_sizes)
