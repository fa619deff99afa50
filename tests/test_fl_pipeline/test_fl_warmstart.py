"""`fedkb pretrain` on public text, then `fedkb train --init-from` (issue 14 §3), at toy scale
with real TFF: the federated run starts from the pretrained weights, refuses the phones' own
corpus and another vocabulary, and `fedkb eval`'s centralized and local-only baselines start
from the same weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from fl_helpers import FAST_TRAIN_FLAGS, TOPICS, fedkb

MODEL = ["--embedding-dim", "8", "--lstm-units", "16"]


def write_texts(path, topics, clients=16, texts=8):
    with open(path, "w") as f:
        for c in range(clients):
            sentences = TOPICS[topics[c % len(topics)]]
            for t in range(texts):
                f.write(json.dumps({"client_id": f"{path.stem}-{c:02d}",
                                    "text": sentences[t % len(sentences)]}) + "\n")
    return path


def prepare(corpus, out, vocab_size=300):
    # The default, public wordfreq vocabulary: the same list for both stores.
    fedkb("data", "prepare", "--corpus", corpus, "--out", out, "--vocab-size", str(vocab_size),
          "--seq-len", "8", "--heldout-fraction", "0.25", "--seed", "1")
    return out


def weights_of(path):
    from models.next_word import ModelConfig, build_model

    config = json.loads((path.parent / "config.json").read_text())["model"]
    model = build_model(ModelConfig(**config))
    model.load_weights(str(path))
    return model.get_weights()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warmstart")
    phones = prepare(write_texts(tmp / "phones.jsonl", ["cats", "rain"]), tmp / "phones")
    public = prepare(write_texts(tmp / "public.jsonl", ["code", "food"]), tmp / "public")
    fedkb("pretrain", "--public", public, "--for-data", phones, "--out", tmp / "pretrain",
          "--examples", "256", "--batch-size", "8", *MODEL)
    return tmp, phones, public, tmp / "pretrain"


def test_pretrain_records_public_text_and_vocabulary(stores):
    tmp, phones, public, pretrain = stores
    config = json.loads((pretrain / "config.json").read_text())
    assert config["kind"] == "pretrain"
    assert config["data"]["public"] is True
    assert config["data"]["corpus"] == f"jsonl:{tmp / 'public.jsonl'}"
    phones_vocab = json.loads((phones / "vocab.json").read_text())["sha256"]
    assert config["data"]["vocab_sha256"] == phones_vocab


@pytest.fixture(scope="module")
def still_runs(stores):
    """A warm-started and a random-start run whose one round moves no weight measurably
    (learning rates 1e-9): each final model, and each held-out score, is its initial one."""
    tmp, phones, _, pretrain = stores
    still = ["--rounds", "1", "--eval-every", "1", "--server-optimizer", "sgd",
             "--server-lr", "1e-9", "--client-lr", "1e-9"]
    fedkb("train", "--data", phones, "--out", tmp / "warm", *FAST_TRAIN_FLAGS, *still,
          "--init-from", pretrain)
    fedkb("train", "--data", phones, "--out", tmp / "cold", *FAST_TRAIN_FLAGS, *still)
    return tmp / "warm", tmp / "cold"


def test_train_init_from_starts_at_the_pretrained_weights(stores, still_runs):
    tmp, phones, _, pretrain = stores
    # The final model is the initial one: it must be the pretrained model, not the random one.
    pretrained = weights_of(pretrain / "final_model.weights.h5")
    warm = weights_of(tmp / "warm" / "final_model.weights.h5")
    cold = weights_of(tmp / "cold" / "final_model.weights.h5")
    for p, w in zip(pretrained, warm):
        np.testing.assert_allclose(w, p, atol=1e-6)
    assert not all(np.allclose(p, c, atol=1e-3) for p, c in zip(pretrained, cold))

    config = json.loads((tmp / "warm" / "config.json").read_text())
    assert config["init"]["kind"] == "pretrain" and config["init"]["public_text"] is True
    assert config["init"]["corpus"] == f"jsonl:{tmp / 'public.jsonl'}"
    assert config["data"]["public"] is False
    assert json.loads((tmp / "warm" / "summary.json").read_text())["init"] == config["init"]
    assert "init" not in json.loads((tmp / "cold" / "config.json").read_text())


def test_warm_start_lowers_the_first_held_out_loss(still_runs):
    # On the phones' held-out text, before any federated training has moved the weights:
    # pretraining on other topics already taught the shared words and `<eos>`.
    loss = {run.name: json.loads((run / "summary.json").read_text())
            ["final_metrics"]["heldout"]["token_loss"] for run in still_runs}
    assert loss["warm"] < loss["cold"]


def assert_refused(done, reason: str, out: Path) -> None:
    """Refused in one line with exit code 2, before anything was written to `out`."""
    assert done.returncode == 2 and reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_refuses_weights_pretrained_on_the_phones_corpus(stores):
    tmp, phones, _, _ = stores
    again = prepare(tmp / "phones.jsonl", tmp / "phones_again")  # the same text, another store
    done = fedkb("pretrain", "--public", again, "--for-data", phones, "--out", tmp / "bad",
                 "--examples", "16", "--batch-size", "8", *MODEL, check=False)
    assert_refused(done, "the corpus the phones hold", tmp / "bad")
    # Pretrained without --for-data, it is refused where it matters: at --init-from.
    fedkb("pretrain", "--public", again, "--out", tmp / "own", "--examples", "16",
          "--batch-size", "8", *MODEL)
    done = fedkb("train", "--data", phones, "--out", tmp / "own_run", *FAST_TRAIN_FLAGS,
                 "--rounds", "1", "--init-from", tmp / "own", check=False)
    assert_refused(done, "the corpus the phones hold", tmp / "own_run")


def test_refuses_another_vocabulary(stores):
    tmp, phones, _, _ = stores
    other = prepare(tmp / "public.jsonl", tmp / "public_301", vocab_size=301)
    fedkb("pretrain", "--public", other, "--out", tmp / "vocab301", "--examples", "16",
          "--batch-size", "8", *MODEL)
    done = fedkb("train", "--data", phones, "--out", tmp / "vocab_run", *FAST_TRAIN_FLAGS,
                 "--rounds", "1", "--init-from", tmp / "vocab301", check=False)
    assert_refused(done, "another vocabulary", tmp / "vocab_run")


def test_eval_baselines_start_from_the_runs_init(stores, still_runs, monkeypatch):
    tmp, _, _, pretrain = stores
    from fl_pipeline.evaluation import compare

    seen = {}
    real_centralized, real_local = compare.train_centralized, compare.score_local_only

    def centralized(*args, initial_weights=None, **kwargs):
        seen["centralized"] = initial_weights
        return real_centralized(*args, initial_weights=initial_weights, **kwargs)

    def local(*args, initial_weights=None, **kwargs):
        seen["local-only"] = initial_weights
        return real_local(*args, initial_weights=initial_weights, **kwargs)

    monkeypatch.setattr(compare, "train_centralized", centralized)
    monkeypatch.setattr(compare, "score_local_only", local)
    pretrained = weights_of(pretrain / "final_model.weights.h5")
    report = compare.compare(tmp / "warm", show_progress=False,
                              models=("centralized", "local-only"))
    assert set(report["models"]) == {"centralized", "local-only"}
    assert report["init"]["corpus"] == f"jsonl:{tmp / 'public.jsonl'}"
    for name in ("centralized", "local-only"):
        assert len(seen[name]) == len(pretrained)
        for p, w in zip(pretrained, seen[name]):
            np.testing.assert_array_equal(w, p)
        assert "warm start on public" in report["models"][name]["description"]
    compare.compare(tmp / "cold", show_progress=False, models=("centralized", "local-only"))
    assert seen["centralized"] is None and seen["local-only"] is None
