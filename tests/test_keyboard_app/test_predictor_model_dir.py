"""Damaged or mismatched model directories: a clear error, never a crash of the interpreter.

Every case is checked twice: `Predictor` raises `ModelDirError` naming the
file at fault, and `fedkb predict`, in a subprocess (a native crash would
kill it with a signal), exits with code 2 and one line on stderr.
"""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from datasets.vocab import Vocabulary
from factories import tiny_model_dir, tiny_run_dir  # noqa: F401
from keyboard_app.predictor import ModelDirError, Predictor


def rewrite_card(model_dir, **changes) -> None:
    card = json.loads((model_dir / "model_card.json").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        card[section][key] = value
    (model_dir / "model_card.json").write_text(json.dumps(card))


def replace_model(model_dir, data: bytes, *, update_card: bool) -> None:
    """Writes `data` as model.tflite; with `update_card` the card vouches for it (size, hash)."""
    (model_dir / "model.tflite").write_bytes(data)
    if update_card:
        rewrite_card(model_dir, file__bytes=len(data), file__sha256=hashlib.sha256(data).hexdigest())


def model_with_other_signatures(context_len: int) -> bytes:
    """A valid TFLite model with a `suggest` of the right input but none of the other signatures."""
    import tempfile

    import tensorflow as tf

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, context_len], tf.int32, name="context")])
        def suggest(self, context):
            return {"logprobs": tf.cast(context, tf.float32)}

    module = Other()
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures={"suggest": module.suggest.get_concrete_function()})
        return tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["suggest"]).convert()


def damage(case: str, model_dir, tmp_path):
    """Applies a damage to a copy of the model directory; returns (path to open, file at fault)."""
    model = model_dir / "model.tflite"
    good = model.read_bytes()
    if case == "missing directory":
        shutil.rmtree(model_dir)
        return model_dir, model_dir.name
    if case == "empty directory":
        shutil.rmtree(model_dir)
        model_dir.mkdir()
        return model_dir, model_dir.name
    if case == "a file, not a directory":
        return model, "model.tflite"
    if case == "model.tflite missing":
        model.unlink()
    elif case == "model.tflite truncated":
        replace_model(model_dir, good[: len(good) // 2], update_card=False)
    elif case == "model.tflite corrupted":
        flipped = bytearray(good)
        flipped[len(good) // 2] ^= 0xFF
        replace_model(model_dir, bytes(flipped), update_card=False)
    elif case == "truncated, card rewritten to match":
        replace_model(model_dir, good[: len(good) - 1000], update_card=True)
    elif case == "garbage with a TFLite header, card rewritten to match":
        garbage = np.random.default_rng(0).integers(0, 256, len(good), dtype=np.uint8).tobytes()
        replace_model(model_dir, good[:8] + garbage[8:], update_card=True)
    elif case == "model without the expected signatures":
        T = json.loads((model_dir / "model_card.json").read_text())["model"]["context_len"]
        replace_model(model_dir, model_with_other_signatures(T), update_card=True)
    elif case == "signature shapes disagree with the card":
        rewrite_card(model_dir, model__context_len=7)
    elif case == "vocab.json of another model":
        Vocabulary.from_words(["some", "other", "words"], size=40).save(model_dir / "vocab.json")
        return model_dir, "vocab.json"
    elif case == "vocab.json edited":
        data = json.loads((model_dir / "vocab.json").read_text())
        data["tokens"][-1] = "zzzz"
        (model_dir / "vocab.json").write_text(json.dumps(data))
        return model_dir, "vocab.json"
    elif case == "model_card.json not JSON":
        (model_dir / "model_card.json").write_text("{not json")
        return model_dir, "model_card.json"
    elif case == "model_card.json missing":
        (model_dir / "model_card.json").unlink()
        return model_dir, "model_card.json"
    return model_dir, "model.tflite"


CASES = ["missing directory", "empty directory", "a file, not a directory", "model.tflite missing",
         "model.tflite truncated", "model.tflite corrupted", "truncated, card rewritten to match",
         "garbage with a TFLite header, card rewritten to match",
         "model without the expected signatures", "signature shapes disagree with the card",
         "vocab.json of another model", "vocab.json edited", "model_card.json not JSON",
         "model_card.json missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_model_directory_is_refused_cleanly(case, tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    path, culprit = damage(case, model_dir, tmp_path)

    with pytest.raises(ModelDirError) as info:
        Predictor(path)
    message = str(info.value)
    assert culprit in message and "\n" not in message

    out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "predict", "--model", str(path), "the"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stderr)  # a signal death would be negative
    assert out.stdout == ""
    assert out.stderr.strip() == f"fedkb predict: error: {message}"


def test_messages_say_what_is_wrong(tiny_model_dir, tmp_path):
    expectations = {
        "model.tflite truncated": "truncated",
        "model.tflite corrupted": "sha256 differs",
        "truncated, card rewritten to match": "LiteRT cannot load it",
        "model without the expected signatures": "no signature train, get_personal, set_personal",
        "signature shapes disagree with the card": "signature suggest inputs",
        "vocab.json of another model": "belongs to another model",
        "empty directory": "empty",
    }
    for case, expected in expectations.items():
        model_dir = tmp_path / case.replace(" ", "-")
        shutil.copytree(tiny_model_dir, model_dir)
        path, _ = damage(case, model_dir, tmp_path)
        with pytest.raises(ModelDirError, match=expected):
            Predictor(path)
