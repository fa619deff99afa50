"""`fedkb train` and its run directory before the first checkpoint (issue 12): a store that
cannot be evaluated is refused up front, and a failed or killed start blocks no retry.

TFF's program never runs here: `fl_pipeline.training.run._run` is replaced where a test needs it."""

import json
import sqlite3

import pytest

from fl_pipeline.cli import main
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import RunDirError
from fl_pipeline.training import run


def test_train_refuses_a_store_without_heldout_future_clients(data_dir, tmp_path, capsys):
    """An older FedKB wrote such stores; TFF's evaluation then crashed with StopIteration."""
    import shutil

    old = tmp_path / "old-store"
    shutil.copytree(data_dir, old)
    with sqlite3.connect(old / "clients.sqlite") as db:
        db.execute("DELETE FROM client_metadata WHERE split_name = 'heldout_future'")
    assert main(["train", "--data", str(old), "--out", str(tmp_path / "run"), "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0 of them with 2 or more texts" in err
    assert "--force" in err and not (tmp_path / "run").exists()


def test_a_train_that_fails_before_its_first_checkpoint_leaves_no_run_behind(data_dir, tmp_path,
                                                                            monkeypatch):
    def crash(run_dir, *args):
        (run_dir / "metrics.csv").write_text("round\n1\n")
        (run_dir / "checkpoints" / "program_state_1").mkdir(parents=True)  # no COMPLETE marker
        raise RuntimeError("the worker died")

    monkeypatch.setattr(run, "_run", crash)
    with pytest.raises(RuntimeError):
        run.train(data_dir, tmp_path / "run", TrainConfig(rounds=1))
    assert not (tmp_path / "run").exists()  # created by this run, so removed with it

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(RuntimeError):
        run.train(data_dir, mine, TrainConfig(rounds=1))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # only FedKB's files went


def test_a_run_killed_before_its_first_checkpoint_is_started_afresh(data_dir, tmp_path,
                                                                   monkeypatch):
    """kill -9 cleans nothing up: the next `fedkb train --out` finds config.json but no
    completed checkpoint, so nothing to resume, and starts over instead of refusing."""
    killed = tmp_path / "run"
    (killed / "checkpoints" / "program_state_1").mkdir(parents=True)
    (killed / "config.json").write_text(json.dumps({"train": {"rounds": 99}}))
    (killed / "metrics.csv").write_text("round\n1\n")
    seen = {}

    def fake_run(run_dir, store, model_config, config, show_progress):
        seen["files"] = sorted(p.name for p in run_dir.iterdir())
        seen["config"] = json.loads((run_dir / "config.json").read_text())["train"]["rounds"]
        return {}

    monkeypatch.setattr(run, "_run", fake_run)
    run.train(data_dir, killed, TrainConfig(rounds=2))
    assert seen == {"files": ["config.json", "vocab.json"], "config": 2}

    (killed / "checkpoints" / "program_state_2").mkdir(parents=True)
    (killed / "checkpoints" / "program_state_2" / "COMPLETE").write_text("")
    with pytest.raises(RunDirError, match="already holds a run; continue it with `.*fedkb "
                       "train --resume"):
        run.train(data_dir, killed, TrainConfig(rounds=2))
    assert (killed / "checkpoints" / "program_state_2" / "COMPLETE").exists()
