import subprocess
import sys
from pathlib import Path

import pytest

from fl_pipeline.cli.parser import build_parser

SUBCOMMANDS = ["data", "pretrain", "train", "eval", "export", "predict", "app", "worker", "audit", "bench", "demo"]


def fedkb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fl_pipeline.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand_without_importing_tensorflow():
    out = fedkb("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout
    code = ("import sys; from fl_pipeline.cli.parser import build_parser; build_parser(); "
            "print('tensorflow' in sys.modules)")
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert check.stdout.strip() == "False"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: fedkb " + name in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nonsense"], ["train", "--rounds", "-3"], ["data", "prepare",
                                  "--heldout-fraction", "2"], ["predict"],
                                  ["eval", "--models", "federated,fedrated"],
                                  ["eval", "--personalize", "--models", "n-gram"]])
def test_bad_arguments_give_one_line_error_and_exit_code_2(argv):
    out = fedkb(*argv)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("fedkb")
    if "--models" in argv:  # refused before any run directory is read
        assert ("unknown model(s) fedrated; choose from federated," in out.stderr
                or "add federated to --models" in out.stderr)


# --- issue 12: defaults and commands that run as printed ---------------------------------

READING = {("data", "stats"): ("data_dir", "runs/demo/data"), ("eval",): ("run_dir", "runs/demo/run"),
           ("export",): ("run_dir", "runs/demo/run"), ("audit",): ("run_dir", "runs/demo/run"),
           ("predict", "x"): ("model", "runs/demo/model"), ("app",): ("model", "runs/demo/model")}


@pytest.mark.parametrize("argv", list(READING))
def test_reading_commands_default_to_what_the_demo_wrote_and_help_says_so(argv, capsys):
    name, default = READING[argv]
    assert str(getattr(build_parser().parse_args(list(argv)), name)) == default
    with pytest.raises(SystemExit):
        build_parser().parse_args([a for a in argv if a != "x"] + ["--help"])
    assert f"(default: {default}, from `fedkb demo`)" in " ".join(capsys.readouterr().out.split())


def test_writing_commands_default_to_their_own_paths_and_help_shows_them(capsys):
    parser = build_parser()
    writes = {"prepare": parser.parse_args(["data", "prepare"]).out,
              "train": parser.parse_args(["train"]).out,
              "export": parser.parse_args(["export"]).out}
    assert {k: str(v) for k, v in writes.items()} == {"prepare": "runs/data", "train": "runs/train",
                                                      "export": "runs/model"}
    assert str(parser.parse_args(["train"]).data) == "runs/data"  # what `data prepare` wrote
    for argv in (["data", "prepare"], ["train"], ["export"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv + ["--help"])
        assert "(default: runs/" in capsys.readouterr().out


def test_printed_commands_name_the_fedkb_of_this_environment(tmp_path, monkeypatch):
    from datasets.layout import fedkb_command

    script = Path(sys.executable).parent / "fedkb"
    assert script.is_file()  # `make setup` installs it
    monkeypatch.chdir(script.parent.parent.parent)  # the checkout holding .venv
    assert fedkb_command("train", "--resume", "runs/x y") == ".venv/bin/fedkb train --resume 'runs/x y'"
    monkeypatch.chdir(tmp_path)
    assert fedkb_command("app") == f"{script.absolute()} app"


def test_a_printed_command_runs_as_printed_from_where_the_user_is(tmp_path):
    """`data stats` on a missing store says which command writes it; that command, typed into a
    shell as printed, works; run again it is refused naming --force (issue 12)."""
    def shell(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    stats = f"{Path(sys.executable).parent / 'fedkb'} data stats store"
    shown = shell(stats)
    assert shown.returncode == 2
    command = shown.stderr.split("`")[1]
    assert command == f"{Path(sys.executable).parent / 'fedkb'} data prepare --out store"
    done = shell(command)
    assert done.returncode == 0, done.stderr
    assert shell(stats).returncode == 0
    again = shell(command)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already holds a prepared client store; pass --force" in again.stderr
