import subprocess
import sys

import pytest

from fl_pipeline.cli import build_parser, main

SUBCOMMANDS = ["data", "train", "eval", "export", "predict", "app", "worker", "audit", "bench", "demo"]


def fedkb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fl_pipeline.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand_without_importing_tensorflow():
    out = fedkb("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout
    code = ("import sys; from fl_pipeline.cli import build_parser; build_parser(); "
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
                                  "--heldout-fraction", "2"], ["predict"]])
def test_bad_arguments_give_one_line_error_and_exit_code_2(argv):
    out = fedkb(*argv)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("fedkb")
