"""`fedkb export`: the model directory, its ops, and parity with the Keras model."""

import json
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from datasets.vocab import RESERVED_TOKENS, Vocabulary
from factories import (synthetic_texts, tiny_float_model_dir, tiny_model_dir,  # noqa: F401
                       tiny_run_dir)
from keyboard_app.model_dir import read_model_dir
from keyboard_app.predictor import Predictor

SIGNATURES = {"suggest", "train", "get_personal", "set_personal"}


def operator_names(model_bytes: bytes) -> set[str]:
    """Every operator of a TFLite flatbuffer: builtin names, or CUSTOM:<code>."""
    model = schema.Model.GetRootAs(model_bytes, 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    result = set()
    for i in range(model.OperatorCodesLength()):
        op = model.OperatorCodes(i)
        code = max(op.BuiltinCode(), op.DeprecatedBuiltinCode())
        name = names[code]
        result.add(f"CUSTOM:{op.CustomCode().decode()}" if name == "CUSTOM" else name)
    return result


def heldout_contexts(predictor: Predictor, *, words_only: bool = False) -> np.ndarray:
    """Contexts of every next-token position of texts the model never saw."""
    words = predictor.vocab.tokens[len(RESERVED_TOKENS):]
    examples = [predictor.training_examples(t) for t in synthetic_texts(words, 120, seed=1234)]
    contexts = np.concatenate([c for c, _ in examples])
    targets = np.concatenate([t for _, t in examples])
    if words_only:
        contexts = contexts[[predictor.vocab.is_word(int(t)) for t in targets]]
    return contexts


@pytest.fixture(scope="module")
def keras_model(tiny_run_dir):
    from fl_pipeline.run_dir import load_finished_run

    return load_finished_run(tiny_run_dir)[0]


def keras_logprobs(model, contexts: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.nn.log_softmax(model(contexts)[:, -1]).numpy()


def test_model_directory_is_self_describing(tiny_model_dir, tiny_run_dir):
    card = json.loads((tiny_model_dir / "model_card.json").read_text())
    model_bytes = (tiny_model_dir / "model.tflite").read_bytes()
    summary = json.loads((tiny_run_dir / "summary.json").read_text())
    run_config = json.loads((tiny_run_dir / "config.json").read_text())
    vocab = Vocabulary.load(tiny_model_dir / "vocab.json")

    assert card["file"]["bytes"] == len(model_bytes)
    import hashlib
    assert card["file"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert card["file"]["quantization"].startswith("dynamic-range")
    assert vocab == Vocabulary.load(tiny_run_dir / "vocab.json")
    assert card["vocab"] == {"file": "vocab.json", "size": len(vocab), "sha256": summary["vocab_sha256"]}
    assert card["model"]["context_len"] == run_config["model"]["seq_len"]
    assert card["model"]["vocab_size"] == len(vocab)
    assert card["model"]["parameters"] > card["model"]["personal_parameters"] > 0
    assert card["training"]["rounds"] == summary["rounds"] == 0
    assert card["training"]["corpus"] == summary["corpus"]
    assert card["training"]["dp"] == "none"
    assert card["training"]["secure_aggregation"] is False
    assert card["heldout_metrics"] == summary["final_metrics"]["heldout"]
    assert card["fedkb_version"] not in ("", "unknown")
    assert card["exported_at"].endswith("+00:00")
    T, B, V = card["model"]["context_len"], card["personal_layer"]["train_batch_size"], len(vocab)
    assert card["signatures"]["suggest"] == {"inputs": {"context": ["int32", [1, T]]},
                                             "outputs": {"logprobs": ["float32", [1, V]]}}
    assert card["signatures"]["train"]["inputs"] == {"context": ["int32", [B, T]],
                                                     "target": ["int32", [B]]}
    assert read_model_dir(tiny_model_dir).card == card


def test_model_uses_only_builtin_ops_with_resource_variables(tiny_model_dir, tiny_float_model_dir):
    for model_dir in (tiny_model_dir, tiny_float_model_dir):
        ops = operator_names((model_dir / "model.tflite").read_bytes())
        assert not [op for op in ops if op.startswith("CUSTOM")], ops  # no Flex, no custom kernels
        assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} <= ops  # the personal layer
        # The LSTM is unrolled: the fused LSTM kernel keeps state between calls.
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops


def test_quantized_file_is_smaller_than_float(tiny_model_dir, tiny_float_model_dir):
    quantized = (tiny_model_dir / "model.tflite").stat().st_size
    assert quantized < 0.9 * (tiny_float_model_dir / "model.tflite").stat().st_size


def test_float_export_matches_keras_logprobs(tiny_float_model_dir, keras_model):
    predictor = Predictor(tiny_float_model_dir)
    contexts = heldout_contexts(predictor)
    assert len(contexts) > 500
    tflite = np.stack([predictor.logprobs(c) for c in contexts])
    np.testing.assert_allclose(tflite, keras_logprobs(keras_model, contexts), atol=1e-4, rtol=0)


def test_quantized_export_agrees_with_keras_top3(tiny_model_dir, keras_model):
    """The three words a user would be offered, at every point of held-out texts where a word follows.

    (Where a sentence end is certain, the words all share a tiny probability
    and their order is noise for both models; those points are left out.)
    """
    predictor = Predictor(tiny_model_dir)
    contexts = heldout_contexts(predictor, words_only=True)
    assert len(contexts) > 500
    words = np.array([predictor.vocab.is_word(i) for i in range(len(predictor.vocab))])

    def top3(logprobs):
        return np.sort(np.argsort(-np.where(words, logprobs, -np.inf), axis=1)[:, :3], axis=1)

    tflite = np.stack([predictor.logprobs(c) for c in contexts])
    agreement = np.mean(np.all(top3(tflite) == top3(keras_logprobs(keras_model, contexts)), axis=1))
    assert agreement >= 0.99


def test_same_context_gives_the_same_logprobs_whatever_came_before(tiny_model_dir):
    """No state carries over between calls (unlike TFLite's fused LSTM)."""
    predictor = Predictor(tiny_model_dir)
    contexts = heldout_contexts(predictor)[:3]
    first = predictor.logprobs(contexts[0])
    predictor.logprobs(contexts[1])
    predictor.logprobs(contexts[2])
    predictor._forget_cache()
    assert np.array_equal(predictor.logprobs(contexts[0]), first)


def test_fedkb_export_cli_writes_a_model_directory(tiny_run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "export", str(tiny_run_dir),
                          "--out", str(tmp_path / "model"), "--float"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "model.tflite" in out.stdout and "float32" in out.stdout
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["file"]["quantization"] == "none (float32)"
    assert Predictor(tmp_path / "model").suggest("")


@pytest.mark.parametrize("damage", ["missing dir", "no summary", "vocab mismatch", "bad weights",
                                    "bad config json"])
def test_fedkb_export_refuses_a_bad_run_directory_with_one_line(damage, tiny_run_dir, tmp_path, capsys):
    import shutil

    from fl_pipeline.cli import main

    run = tmp_path / "run"
    if damage != "missing dir":
        shutil.copytree(tiny_run_dir, run)
    if damage == "no summary":
        (run / "summary.json").unlink()
    elif damage == "vocab mismatch":
        Vocabulary.from_words(["some", "other", "words"], size=30).save(run / "vocab.json")
    elif damage == "bad weights":
        (run / "final_model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    elif damage == "bad config json":
        (run / "config.json").write_text('{"model": {\n  "vocab_size": 1,,\n}')
    assert main(["export", str(run), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedkb export: error: ") and str(run) in err[0]
    assert not (tmp_path / "model" / "model_card.json").exists()
