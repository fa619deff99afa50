"""Rounds that diverge are skipped (`SkipBadRounds`), end to end with real TFF.

The corpus is the topic corpus of fl_helpers plus one "stuck key" phone whose
texts are the two words "ha ho" alternating. At client learning rate 4 the
topic phones train normally (round losses 3.6-4.0 below the untrained 4.16),
while local SGD on the stuck key's text blows up (a round loss of 1e8 and
more): a real divergence, the same on every run. With seed 1 that phone is
sampled in rounds 1 and 6 of 6, exactly the rounds that must be skipped.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fl_helpers import FAST_TRAIN_FLAGS, fedkb, prepare_corpus
from test_fl_faults import assert_same_final_weights, interrupted_copy, metrics_rows, state_floats

ROUNDS = 6
STUCK = "stuck-key"
STUCK_TEXTS = [" ".join(["ha", "ho"] * 15) + " ."] * 16  # 64 windows: the most a client trains on
# Every round is a checkpoint (the newest three are kept), so rounds 4-6 can be compared.
FLAGS = ["--rounds", str(ROUNDS), *FAST_TRAIN_FLAGS, "--client-lr", "4", "--seed", "1",
         "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def stuck_key_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diverging")
    data = prepare_corpus(tmp, extra={STUCK: STUCK_TEXTS})
    run_dir = tmp / "run"
    out = fedkb("train", "--data", data, "--out", run_dir, *FLAGS)
    return data, run_dir, out


def rounds_with_the_stuck_key(data) -> list[int]:
    from datasets.store import ClientStore
    from fl_pipeline.training.participation import plan_rounds

    ids = ClientStore(data).client_ids("train")
    return [p.round_num for p in plan_rounds(ids, seed=1, rounds=ROUNDS, clients_per_round=4)
            if STUCK in p.aggregated]


def test_rounds_with_a_diverging_client_are_skipped_counted_and_warned(stuck_key_run):
    data, run_dir, out = stuck_key_run
    assert rounds_with_the_stuck_key(data) == [1, 6]  # what this seed gives

    rows = metrics_rows(run_dir)
    diverged = [int(r["round"]) for r in rows if int(r["guard/diverged"])]
    assert diverged == [1, 6]
    for row in rows:
        loss = float(row["model_metrics/token_loss"])
        limit = 2 * float(row["guard/reference_loss"])
        assert (loss > 1e6) if int(row["guard/diverged"]) else (loss < limit)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["diverged_rounds"] == [1, 6] and summary["diverged_round_count"] == 2
    assert summary["undone_rounds"] == []  # rounds 1 and 6 are not in a row: nothing undone
    assert summary["participation"]["skipped_rounds"] == []  # every client reported
    for round_num in (1, 6):
        assert f"round {round_num} diverged and was skipped: training loss" in out.stderr
    assert "round 2 diverged" not in out.stderr
    assert "2 of 6 rounds diverged and were skipped (rounds 1, 6)" in out.stdout


def test_a_diverged_round_leaves_the_whole_server_state_unchanged(stuck_key_run):
    _, run_dir, _ = stuck_key_run
    checkpoints = run_dir / "checkpoints"
    before, after = (state_floats(checkpoints / f"program_state_{r}") for r in (5, 6))
    # model, server optimizer and clipping/zeroing estimates
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    trained = state_floats(checkpoints / "program_state_4")  # round 5 did train
    assert any(not np.array_equal(a, b) for a, b in zip(trained, before, strict=True))
    rows = metrics_rows(run_dir)
    assert rows[1]["guard/reference_loss"] == rows[0]["guard/reference_loss"]  # round 1 kept it


def test_a_resumed_run_carries_the_reference_and_decides_like_the_uninterrupted_one(
        stuck_key_run, tmp_path):
    _, run_dir, _ = stuck_key_run
    resumed = interrupted_copy(run_dir, tmp_path / "run", after_round=4)
    fedkb("train", "--resume", resumed)
    whole, again = metrics_rows(run_dir), metrics_rows(resumed)
    # The reference was replayed from metrics.csv, not restarted at ln V.
    assert float(again[4]["guard/reference_loss"]) < float(again[0]["guard/reference_loss"])
    for a, b in zip(whole, again, strict=True):
        assert (a["round"], a["guard/diverged"]) == (b["round"], b["guard/diverged"])
        for column in ("guard/reference_loss", "model_metrics/token_loss"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-6)
    assert_same_final_weights(run_dir, resumed)
    assert json.loads((resumed / "summary.json").read_text())["diverged_rounds"] == [1, 6]


def test_two_diverged_rounds_in_a_row_undo_the_round_before_them(tmp_path):
    # With seed 346 the stuck key is sampled in rounds 4 and 5 of 6: round 4 is skipped and
    # round 5, the second in a row, undoes round 3 (here a sound round: the guard cannot tell
    # which of the two causes it faces, and undoing one round is the cheap side to err on).
    data = prepare_corpus(tmp_path, extra={STUCK: STUCK_TEXTS})
    flags = [*FLAGS[:FLAGS.index("--seed")], "--seed", "346", "--checkpoint-every", "1"]
    run_dir, reference = tmp_path / "run", tmp_path / "two-rounds"
    out = fedkb("train", "--data", data, "--out", run_dir, *flags)
    fedkb("train", "--data", data, "--out", reference, *flags[:1], "2", *flags[2:])
    rows = metrics_rows(run_dir)
    assert [int(r["round"]) for r in rows if int(r["guard/diverged"])] == [4, 5]
    assert [int(r["guard/undid_round"]) for r in rows] == [0, 0, 0, 0, 3, 0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["undone_rounds"] == [3]
    assert "round 5 diverged and was skipped" in out.stderr and "round 3 is undone" in out.stderr
    assert "1 accepted round undone" in out.stdout
    # After round 5 the server holds the state round 3 started from: a 2-round run's end.
    for a, b in zip(state_floats(run_dir / "checkpoints/program_state_5"),
                    state_floats(reference / "checkpoints/program_state_2"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


class ScriptedProcess:
    """A stand-in for the TFF process: state n becomes n + 1 each round, and the clients'
    training loss comes from a script (what the guard decides on)."""

    def __init__(self, losses):
        self.losses = iter(losses)

    def next(self, state, clients):
        import tensorflow_federated as tff

        metrics = {"client_work": {"train": {"token_loss": np.float32(next(self.losses))}},
                   "finalizer": {"update_non_finite": np.int32(0)}}
        return tff.learning.templates.LearningProcessOutput(state=state + 1, metrics=metrics)


def run_guard(losses, start=100):
    import asyncio

    from fl_pipeline.training.learning_process import SkipBadRounds

    guard = SkipBadRounds(ScriptedProcess(losses), vocab_size=10_000)
    state, states, undone = start, [], []
    for _ in losses:
        output = asyncio.run(guard.next(state, ["phone"]).get_value())
        state = output.state
        states.append(state)
        undone.append(int(output.metrics["guard"]["undid_round"]))
    return states, undone


def test_a_second_diverged_round_in_a_row_undoes_the_round_that_broke_the_model():
    # Round 3 trains normally but leaves a broken model: rounds 4 and 5, sent it, explode.
    # (Seen on chat: 31 rounds in a row skipped from one such state.) Round 4 is skipped;
    # round 5 goes back to the state round 3 started from, and training goes on from there.
    states, undone = run_guard([8.0, 7.0, 6.5, 20.0, 19.0, 6.4, 30.0, 6.3])
    assert states == [101, 102, 103, 103, 102, 103, 103, 104]
    assert undone == [0, 0, 0, 0, 3, 0, 0, 0]
    # A single diverged round (round 7: its own client exploded) only skips, as before.


def test_the_guard_never_undoes_twice_without_an_accepted_round_between():
    states, undone = run_guard([8.0, 7.0, 20.0, 21.0, 22.0, 6.0])
    assert states == [101, 102, 102, 101, 101, 102]
    assert undone == [0, 0, 0, 2, 0, 0]
