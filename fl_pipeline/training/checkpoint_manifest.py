"""Checkpoint manifests: is a saved program state complete and intact?

TFF's `FileProgramStateManager` writes each version as a SavedModel into a
temporary directory and renames it into place: a process killed while
writing leaves a temporary directory or, between the rename and our
bookkeeping, a directory nobody vouched for. Nothing checks that the files
are still what was written (a machine that lost power before the page cache
reached the disk, a copy that was cut short, a flipped bit).

So after a save, the SHA-256 and size of every file of the version go into
its `COMPLETE` marker (written to a temporary file, fsynced, renamed), and
a version counts only if its manifest exists and every file still matches
it. An empty `COMPLETE` (written by FedKB before manifests existed) counts
as complete but unverified.

Pure Python, no TensorFlow: `fedkb train --resume` checks a run's
checkpoints with it before starting TFF (`usable_versions`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from datasets.errors import FedKBError

COMPLETE_MARKER = "COMPLETE"
MANIFEST_FORMAT = "fedkb-checkpoint-manifest/1"
PREFIX = "program_state_"


class CheckpointError(FedKBError):
    """No checkpoint of a run can be used."""


def no_usable_checkpoint(root: Path, damaged: dict[int, str]) -> CheckpointError:
    listing = "; ".join(f"{PREFIX}{v}: {why}" for v, why in sorted(damaged.items()))
    return CheckpointError(f"{root}: no usable checkpoint ({listing}); delete {root} to train "
                           "again from round 0, or start a new run with another --out")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not p.name.startswith(COMPLETE_MARKER))


def write_manifest(path: Path) -> None:
    """Records every file of the checkpoint at `path` in its COMPLETE marker, durably."""
    files = {str(p.relative_to(path)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in _state_files(path)}
    partial = path / (COMPLETE_MARKER + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path / COMPLETE_MARKER)


def damage(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted, or None if it is complete and intact."""
    marker = path / COMPLETE_MARKER
    try:
        text = marker.read_text("utf-8")
    except FileNotFoundError:
        return "incomplete (no COMPLETE marker: the process stopped while writing it)"
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable COMPLETE marker ({e})"
    if not text.strip():
        return None  # an older FedKB's marker: complete, not verifiable
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("not a FedKB checkpoint manifest")
    except (ValueError, KeyError, TypeError) as e:
        return f"damaged COMPLETE marker ({e})"
    present = {str(p.relative_to(path)) for p in _state_files(path)}
    for name, expected in sorted(files.items()):
        file = path / name
        try:
            if not isinstance(expected, dict):
                raise ValueError("bad manifest entry")
            if file.stat().st_size != expected.get("bytes"):
                return f"{name} has {file.stat().st_size} bytes, {expected.get('bytes')} were written"
            if _sha256(file) != expected.get("sha256"):
                return f"{name} differs from what was written (sha256)"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError) as e:
            return f"{name}: {e}"
    extra = sorted(present - set(files))
    if extra:
        return f"{extra[0]} was not part of the checkpoint"
    return None


def version_of(name: str) -> int | None:
    """The version in a checkpoint directory's name (`program_state_12` -> 12), else None."""
    suffix = name[len(PREFIX):] if name.startswith(PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def marked_versions(root: Path) -> list[int]:
    """Versions under `root` with a COMPLETE marker, unverified (cheap: no hashing)."""
    if not root.is_dir():
        return []
    return sorted(v for entry in root.iterdir()
                  if (v := version_of(entry.name)) is not None and (entry / COMPLETE_MARKER).exists())


def usable_versions(root: Path) -> tuple[list[int], dict[int, str]]:
    """(complete and intact versions, {damaged version: why}) under `root`."""
    usable, damaged = [], {}
    for version in marked_versions(root):
        why = damage(root / f"{PREFIX}{version}")
        if why is None:
            usable.append(version)
        else:
            damaged[version] = why
    return usable, damaged
