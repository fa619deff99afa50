"""The app's texts in plain words: the model card, the personal statistics, the missing-model help.

Pure functions of data, so tests check them without a window.
"""

from __future__ import annotations

from pathlib import Path

from datasets.layout import DATA_DIR, MODEL_DIR, RUN_DIR, fedkb_command
from keyboard_app.personal import HISTORY, LearnerConfig, PersonalStats


def number(value, digits: int = 0, unit: str = "") -> str:
    """The panel's one number format: thousands separated, `digits` decimals, then `unit`.

    A value too small to show with `digits` decimals (DP's delta) is shown as 1e-05.
    "?" when the card or the statistics do not have the value.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "?"
    if value and abs(value) < 0.5 * 10 ** -digits:
        return f"{value:.0e}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _percent(value) -> str:
    return number(100 * value if isinstance(value, (int, float)) else None, 1, "%")


def describe_model(card: dict) -> list[str]:
    """What the model card says, one sentence per line, for someone who is not an ML engineer."""
    training = card.get("training") or {}
    corpus = training.get("corpus") or {}
    rounds = training.get("rounds") or 0
    lines = []
    if rounds > 0:
        lines.append(
            f"Trained federatedly on {number(training.get('clients_seen'))} phones over "
            f"{number(rounds)} rounds ({number(training.get('clients_per_round'))} phones per "
            "round): their text stayed on them, only model updates were sent.")
    else:
        lines.append("Not trained federatedly (0 rounds): "
                     + (training.get("note") or "trained on one machine."))
    if corpus:  # the client store's corpus: name, source, files
        text_bytes = training.get("raw_text_bytes_of_training_clients")
        lines.append(f"Text: the {corpus.get('name', 'unknown')} corpus"
                     + (f", {number(text_bytes / 1e6, 1, ' MB')} on the training phones"
                        if isinstance(text_bytes, int) else "") + ".")
    dp = training.get("dp")
    if isinstance(dp, dict) and "epsilon" in dp:
        lines.append(f"Privacy: differential privacy, \u03b5 = {number(dp['epsilon'], 2)}, "
                     f"\u03b4 = {number(dp.get('delta'))}.")
    else:
        lines.append("Privacy: no differential privacy (\u03b5: none).")
    secure, compressed = training.get("secure_aggregation"), training.get("compression")
    lines.append("Updates: " + ("secure aggregation" if secure else "no secure aggregation") + ", "
                 + ("compressed." if compressed else "not compressed."))
    heldout = card.get("heldout_metrics") or {}
    if heldout:
        lines.append(f"On phones it never trained on: the right next word first "
                     f"{_percent(heldout.get('top1_accuracy'))} of the time, among the three "
                     f"suggestions {_percent(heldout.get('top3_accuracy'))}.")
    file, vocab, model = card.get("file") or {}, card.get("vocab") or {}, card.get("model") or {}
    size, parameters = file.get("bytes"), model.get("parameters")
    parts = [number(size / 1e6 if isinstance(size, int) else None, 2, " MB"),
             f"{number(vocab.get('size'))} words and symbols"]
    if isinstance(parameters, int):
        parts.append(f"{number(parameters)} parameters")
    lines.append("Model: " + ", ".join(parts) + ".")
    return lines


def describe_suggestions(stats: PersonalStats, *, personalized: bool, learning: bool,
                         stored_messages: int, refit_pending: bool = False,
                         min_messages: int = LearnerConfig().min_messages) -> str:
    """Which model the suggestions come from, and why, in one sentence."""
    if personalized:
        line = (f"Suggestions: personalized on your {number(stats.messages_learned)} messages, "
                f"with your own words" + ("" if stats.check == HISTORY else " and a personal layer"))
        if stats.ksr_personal is not None and stats.ksr_shared is not None:
            gain = 100 * (stats.ksr_personal - stats.ksr_shared)
            line += (f" ({'+' if gain >= 0 else '-'}{number(abs(gain))}% keystrokes saved on your "
                     f"latest {number(stats.check_messages)})")
        return line + "."
    line = "Suggestions: the shared model"
    if refit_pending:
        return line + (f" (a new one arrived; your personal layer is being re-fitted on your "
                       f"{number(stored_messages)} stored messages)." if learning else
                       " (a new one arrived; switch learning on to re-fit your personal layer).")
    if stats.check == "shared" and stats.check_messages:
        return line + (f" (personalizing saved no keystrokes on your latest "
                       f"{number(stats.check_messages)} messages, so it is not used).")
    if learning and stored_messages < min_messages:
        missing = min_messages - stored_messages
        return line + (f" (personalizing needs {number(missing)} more message"
                       f"{'s' if missing != 1 else ''}: your newest are held back to check it).")
    return line + "."


def describe_personal(stats: PersonalStats, *, learning: bool, personalized: bool,
                      stored_messages: int, busy: bool, refit_pending: bool = False,
                      min_messages: int = LearnerConfig().min_messages) -> list[str]:
    """The personal statistics of the info panel."""
    lines = [describe_suggestions(stats, personalized=personalized, learning=learning,
                                  stored_messages=stored_messages, refit_pending=refit_pending,
                                  min_messages=min_messages)]
    lines.append(f"Learning from your typing: {'on' if learning else 'off'}"
                 + ("" if learning else " (nothing new is stored)") + ".")
    lines.append(f"Messages stored on this device: {number(stored_messages)}.")
    if stats.fine_tunes:
        lines.append(f"Messages learned: {number(stats.messages_learned)} (personalized "
                     f"{number(stats.fine_tunes)} time{'s' if stats.fine_tunes != 1 else ''}).")
        if stats.last_loss is not None:  # only when the pass fine-tuned a personal layer
            lines.append(f"Last fine-tuning loss: {number(stats.last_loss, 3)}.")
    else:
        lines.append("Messages learned: 0 (not personalized yet).")
    if busy:
        lines.append("Personalizing in the background...")
    for label, after in (("before", False), ("after", True)):
        rate = stats.hit_rate(after)
        words = stats.words_after if after else stats.words_before
        lines.append(f"Suggestion hits {label} personalization: "
                     + (f"{_percent(rate)} of {number(words)} words." if rate is not None else "no words yet."))
    return lines


HIT_EXPLANATION = ("A hit is a word you tapped in the suggestion strip, or that the strip "
                   "showed before you had typed all of it.")


def missing_model_help(model_dir: str | Path, problem: str) -> str:
    """The friendly screen when there is no usable model directory."""
    return (
        "This keyboard needs a model, and there is no usable one yet.\n\n"
        f"{problem}\n\n"
        "To try everything in one go (prepare the built-in corpus, train federatedly, export, "
        "open this app):\n"
        f"    {fedkb_command('demo')}\n\n"
        "Or step by step:\n"
        f"    {fedkb_command('data', 'prepare', '--out', DATA_DIR)}\n"
        f"    {fedkb_command('train', '--data', DATA_DIR, '--out', RUN_DIR)}\n"
        f"    {fedkb_command('export', RUN_DIR, '--out', MODEL_DIR)}\n"
        f"    {fedkb_command('app', '--model', MODEL_DIR)}\n\n"
        f"(This app was started with --model {model_dir}.)")
