"""`fedkb demo` at toy scale (FEDKB_DEMO_TINY=1), then every command it prints and every
cheap command of the README's quick start, run exactly as written (issue 12), and a second
demo that reuses every stage, export included.

The demo runs in a fresh directory holding only a `.venv` link to this checkout's, as on a
fresh machine after `make setup`, without a display; commands are typed into a shell."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

from fl_pipeline.cli.parser import build_parser
from keyboard_app.model_dir import read_model_dir

CHECKOUT = Path(__file__).resolve().parents[2]


def shell(command: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True,
                          timeout=1200, env=environment)


def quick_start_commands() -> list[str]:
    """The `.venv/bin/fedkb` lines of the README's quick start code blocks, comments dropped."""
    readme = (CHECKOUT / "README.md").read_text("utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S)
             for line in block.splitlines()]
    return [shlex.join(shlex.split(line, comments=True)) for line in lines
            if line.startswith(".venv/bin/fedkb ")]


def check_runs_as_printed(command: str, cwd: Path) -> None:
    if shlex.split(command)[1] == "app":  # no display here: check what it would open
        args = build_parser().parse_args(shlex.split(command)[1:])
        read_model_dir(cwd / args.model)
        done = shell(command, cwd)
        assert done.returncode == 2 and "no display to open the app window" in done.stderr
        return
    done = shell(command, cwd)
    assert done.returncode == 0, f"{command}:\n{done.stderr[-2000:]}"
    assert done.stdout.strip()


def test_demo_then_every_printed_and_quick_start_command(tmp_path):
    (tmp_path / ".venv").symlink_to(CHECKOUT / ".venv")
    # The default demo: chitchat phones, a random start, three stages.
    first = shell(".venv/bin/fedkb demo", tmp_path, FEDKB_DEMO_TINY="1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1/3 preparing the chitchat corpus" in first.stdout
    assert "3/3 exporting to TFLite in runs/demo/model" in first.stdout
    run_config = json.loads((tmp_path / "runs" / "demo" / "run" / "config.json").read_text())
    assert run_config["data"]["corpus"] == "chitchat" and run_config.get("init") is None

    fedkb = str(CHECKOUT / ".venv" / "bin" / "fedkb")  # the running fedkb, as the demo spells it
    printed = [line.split(": ", 1)[1] for line in first.stdout.splitlines()
               if f": {fedkb} " in line]
    assert [shlex.split(c)[1:3] for c in printed] == [["app"], ["predict", "see you "],
                                                       ["data", "stats"]]
    for command in printed:
        check_runs_as_printed(command, tmp_path)

    commands = quick_start_commands()
    assert len(commands) >= 3
    for command in commands:
        check_runs_as_printed(command, tmp_path)

    card = tmp_path / "runs" / "demo" / "model" / "model_card.json"
    exported = card.read_bytes()
    for asked, refusal in (("--corpus fortunes", "holds a demo on 'chitchat'"),
                           ("--warm-start", "holds a demo without a warm start")):
        other = shell(f".venv/bin/fedkb demo --no-app {asked}", tmp_path, FEDKB_DEMO_TINY="1")
        assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
        assert refusal in other.stderr
    second = shell(".venv/bin/fedkb demo --no-app", tmp_path, FEDKB_DEMO_TINY="1")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1/3 using the phones' chitchat clients" in second.stdout
    assert "2/3 using the finished run" in second.stdout
    assert "3/3 using the model in runs/demo/model, exported from this run" in second.stdout
    assert card.read_bytes() == exported  # not exported again

    # The demo model on chat from another source (issue 14 §3), typed by the model and by an
    # n-gram and a bigram counted from the phones' text.
    (tmp_path / "other.txt").write_text("see you tomorrow\nhow are you doing today\n")
    other = shell(".venv/bin/python -m fl_pipeline.bench.other_chat runs/demo/model runs/demo/run "
                  "other.txt --out other.json", tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    report = json.loads((tmp_path / "other.json").read_text())
    assert report["messages"] == 2 and set(report["models"]) == {"federated (TFLite)", "n-gram",
                                                                  "bigram"}
    assert all(row["words"] == 8 and row["ksr"] < 1 for row in report["models"].values())

    from fl_pipeline.cli.demo import export_is_current

    run_dir, model_dir = tmp_path / "runs" / "demo" / "run", tmp_path / "runs" / "demo" / "model"
    assert export_is_current(run_dir, model_dir)
    weights = run_dir / "final_model.weights.h5"
    weights.write_bytes(weights.read_bytes() + b"\0")  # as if the run had been trained again
    assert not export_is_current(run_dir, model_dir)
