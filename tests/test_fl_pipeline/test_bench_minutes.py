"""Quality against training minutes (`fl_pipeline.bench.minutes`): the clock counts training
only, every mark gets its point, and the command writes its table, JSON and plot."""

import json
import subprocess
import sys

from fl_pipeline.bench.minutes import MINUTES_PLOT, MINUTES_REPORT, crossover, train_and_score


class FakeClock:
    """Seconds that move only when a step trains (1 s each) or a score runs (100 s)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def steps(self):
        while True:
            self.now += 1.0
            yield 8  # examples per step

    def score(self):
        self.now += 100.0
        return {"next_top3": self.now, "ksr": 0.5}


def test_scoring_stops_the_clock_and_every_mark_gets_a_point():
    clock = FakeClock()
    points = train_and_score(clock.steps(), [2.5, 3.0, 7.0], clock.score, clock=clock)
    # Marks 2.5 and 3.0 are both passed by the third step: scored once, one point each.
    assert [(p["minutes"] * 60, p["examples"]) for p in points] == [(3.0, 24), (3.0, 24), (7.0, 56)]
    assert points[0]["next_top3"] == points[1]["next_top3"] != points[2]["next_top3"]


def test_crossover_is_the_first_point_at_or_above_the_reference():
    points = [{"minutes": 1.0, "next_top3": 0.2}, {"minutes": 2.0, "next_top3": 0.31},
              {"minutes": 3.0, "next_top3": 0.29}, {"minutes": 4.0, "next_top3": 0.4}]
    assert crossover(points, 0.3) == 2.0
    assert crossover(points, 0.5) is None


def test_the_command_trains_scores_and_plots_each_model(data_dir, tmp_path):
    out = tmp_path / "minutes"
    done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.minutes", str(data_dir),
                           "--minutes", "0.05", "--points", "2", "--users", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / MINUTES_REPORT).read_text())
    assert set(report["series"]) == {"federated", "centralized"}
    for points in report["series"].values():
        assert len(points) == 2 and points[0]["examples"] <= points[1]["examples"]
        assert points[1]["minutes"] >= 0.05  # trained at least the budget
        assert all(0 <= p["next_top3"] <= 1 and 0 <= p["ksr"] <= 1 for p in points)
    assert 0 < report["ngram"]["next_top3"] <= 1 and report["typed"]["users"] == 4
    assert (out / MINUTES_PLOT).stat().st_size > 0
    assert "n-gram" in done.stdout and "reaches the n-gram's" in done.stdout


def test_a_missing_store_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.minutes",
                           str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "nothing" in done.stderr and "data prepare" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
