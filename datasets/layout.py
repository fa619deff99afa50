"""Where FedKB's commands read and write by default, and how FedKB spells a command.

One place for both, pure Python (the CLI, the client store, the exporter and
the app all print commands), in `datasets/` because every package imports it.

Default paths: the commands that *read* an artifact (`data stats`, `eval`,
`export`, `audit`, `predict`, `app`) default to what `fedkb demo` (`make
demo`) wrote under `runs/demo/`, so they work right after the demo. The
commands that *write* one (`data prepare`, `train`, `export --out`) default
to paths of their own, so they never overwrite the demo's.

Printed commands: `make setup` installs `fedkb` into `.venv/bin/`, which is
not on PATH (and neither, often, is `uv`). So whenever FedKB tells you to
run a command it spells the `fedkb` next to the Python that is running,
relative to the current directory when it lies below it (`.venv/bin/fedkb
train --resume runs/train` from the checkout), absolute otherwise: what it
prints runs as printed, activated virtualenv or not.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

DEMO_DIR = Path("runs/demo")


def demo_paths(out: Path = DEMO_DIR) -> tuple[Path, Path, Path]:
    """(data, run, model) directories of a demo writing to `out`."""
    return out / "data", out / "run", out / "model"


DEMO_DATA_DIR, DEMO_RUN_DIR, DEMO_MODEL_DIR = demo_paths()

# Where the writing commands put their output unless told otherwise.
DATA_DIR = Path("runs/data")      # fedkb data prepare --out
RUN_DIR = Path("runs/train")      # fedkb train --out
PRETRAIN_DIR = Path("runs/pretrain")  # fedkb pretrain --out
MODEL_DIR = Path("runs/model")    # fedkb export --out
BENCH_DIR = Path("runs/bench")    # fedkb bench --out


def _runnable(path: Path) -> str:
    """`path` as typed at a shell prompt in the current directory."""
    try:
        relative = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(relative) if "/" in str(relative) else f"./{relative}"


def venv_command(program: str, *args: object) -> str:
    """`program args...` (a script of the running environment), quoted for a shell."""
    script = Path(sys.executable).parent / program
    if program == "fedkb" and not script.is_file():  # not installed as a script
        prefix = f"{_runnable(Path(sys.executable))} -m fl_pipeline.cli"
    else:
        prefix = _runnable(script)
    return " ".join([prefix, *(shlex.quote(str(a)) for a in args)])


def fedkb_command(*args: object) -> str:
    """A `fedkb` command line that runs as printed: `fedkb_command("train", "--resume", d)`."""
    return venv_command("fedkb", *args)
