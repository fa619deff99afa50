"""Test-only: make `fedkb` fail at a chosen event, never at a chosen time.

A test that sends SIGKILL "once round 4 looks saved" passes or fails with the
machine's speed: the process may be anywhere by the time the signal lands.
Instead the process stops itself, at an event counted by a Python audit hook
(`sys.addaudithook`): every file opened for writing, renamed or deleted
under the watched directory. Set by the tests through the environment:

    FEDKB_TEST_WATCH_DIR=RUN_DIR     count events under RUN_DIR only
    FEDKB_TEST_WRITE_LOG=FILE        append "N<TAB>event<TAB>path" per event
    FEDKB_TEST_KILL_AT=N[:TEXT]      SIGKILL at the N-th event (whose path contains TEXT)
    FEDKB_TEST_STOP_AFTER=PATH       SIGSTOP at the first event after a rename onto a path
                                     ending in PATH (give it whole: RUN_DIR/checkpoints/
                                     program_state_2/COMPLETE, not eval_manager's), so a
                                     test can inject a fault and SIGCONT

Writes made by TensorFlow's C++ code (SavedModel variables, TensorBoard
events) do not raise audit events; the Python steps around them (the
checkpoint's manifest, CSV rows, the Keras weights' rename) do. Without
`FEDKB_TEST_WATCH_DIR` nothing is installed.
"""

from __future__ import annotations

import os
import signal
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _event_path(event: str, args: tuple) -> str | None:
    """The path an audit event writes, renames onto or deletes; None for anything else."""
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
        return os.fsdecode(path) if writes and isinstance(path, (str, bytes, os.PathLike)) else None
    if event == "os.rename":
        return os.fsdecode(args[1])
    if event in ("os.remove", "shutil.rmtree"):
        path = os.fsdecode(args[0])
        return path if os.path.lexists(path) else None  # deleting nothing writes nothing
    return None


def install_from_environment() -> None:
    watch = os.environ.get("FEDKB_TEST_WATCH_DIR")
    if not watch:
        return
    watch = os.path.abspath(watch)
    kill_at, _, kill_text = os.environ.get("FEDKB_TEST_KILL_AT", "").partition(":")
    stop_after = os.environ.get("FEDKB_TEST_STOP_AFTER")
    log_path = os.environ.get("FEDKB_TEST_WRITE_LOG")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if log_path else None
    state = {"count": 0, "matches": 0, "stop_next": False, "inside": False}

    def hook(event: str, args: tuple) -> None:
        if state["inside"] or event not in ("open", "os.rename", "os.remove", "shutil.rmtree"):
            return
        path = _event_path(event, args)
        if path is None or not os.path.abspath(path).startswith(watch):
            return
        state["inside"] = True  # the log's own write must not count
        try:
            if state["stop_next"]:
                state["stop_next"] = False
                os.kill(os.getpid(), signal.SIGSTOP)
            state["count"] += 1
            if log is not None:
                os.write(log, f"{state['count']}\t{event}\t{path}\n".encode())
            if kill_at and (not kill_text or kill_text in path):
                state["matches"] += 1
                if state["matches"] == int(kill_at):
                    os.kill(os.getpid(), signal.SIGKILL)
            if stop_after and event == "os.rename" and path.endswith(stop_after):
                state["stop_next"] = True
        finally:
            state["inside"] = False

    sys.addaudithook(hook)
