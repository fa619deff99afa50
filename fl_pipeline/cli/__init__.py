"""`fedkb`, the command line: `parser` reads the flags, `commands` runs each subcommand,
`demo` chains them. `fedkb = fl_pipeline.cli:main` (pyproject.toml) and
`python -m fl_pipeline.cli` both start here."""

from fl_pipeline.cli.parser import main

__all__ = ["main"]
