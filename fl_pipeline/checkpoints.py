"""Program-state checkpoints that are trusted only when complete and intact.

TFF's `FileProgramStateManager` writes each version as a SavedModel into a
temporary directory and renames it into place: a process killed while
writing leaves a temporary directory or, between the rename and our
bookkeeping, a directory nobody vouched for. Nothing checks that the files
are still what was written (a machine that lost power before the page cache
reached the disk, a copy that was cut short, a flipped bit).

`VerifiedStateManager` adds a manifest: after TFF's save returns, the
SHA-256 and size of every file of the version go into `COMPLETE` (written
to a temporary file, fsynced, renamed). A version counts only if its
manifest exists and every file still matches it. Loading falls back from
the newest version to older ones when one is damaged or will not load, and
says so; when every version is damaged it stops with a clear error instead
of silently training from round 0. Old versions are removed only after the
new one is complete, so a failed write (disk full, read-only directory)
never costs the last good checkpoint.

An empty `COMPLETE` (written by FedKB before manifests existed) counts as
complete but unverified: such a version is trusted if it loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import tensorflow_federated as tff

from datasets.errors import FedKBError

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
MANIFEST_FORMAT = "fedkb-checkpoint-manifest/1"
PREFIX = "program_state_"


class CheckpointError(FedKBError):
    """No checkpoint of a run can be used."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)


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


class VerifiedStateManager(tff.program.FileProgramStateManager):
    """A `FileProgramStateManager` whose versions count only once complete and intact.

    `keep` complete versions are kept (older ones are removed after a new
    one is complete). Damaged versions found while loading are left on disk
    for inspection, skipped, and replaced when training reaches them again.
    """

    def __init__(self, root_dir: Path, keep: int = 5):
        # keep_total=0: TFF's own pruning is off; ours runs after the manifest.
        super().__init__(root_dir, prefix=PREFIX, keep_total=0, keep_first=False)
        self._root = Path(root_dir)
        self._keep = keep
        self._checked: dict[int, str | None] = {}  # version -> damage (None = intact)

    def path_for(self, version: int) -> Path:
        return Path(self._get_path_for_version(version))

    def _marked_versions(self) -> list[int]:
        """Versions with a COMPLETE marker, unverified (cheap: no hashing)."""
        if not self._root.is_dir():
            return []
        versions = []
        for entry in self._root.iterdir():
            version = self._get_version_for_path(entry.name)
            if version is not None and (entry / COMPLETE_MARKER).exists():
                versions.append(version)
        return sorted(versions)

    def _damage(self, version: int) -> str | None:
        if version not in self._checked:
            self._checked[version] = damage(self.path_for(version))
            if self._checked[version] is not None:
                log.warning("checkpoint %s is damaged: %s; using an older one",
                            self.path_for(version), self._checked[version])
        return self._checked[version]

    async def get_versions(self) -> list[int] | None:
        versions = [v for v in self._marked_versions() if self._damage(v) is None]
        return versions or None

    def damaged_versions(self) -> dict[int, str]:
        """Versions found damaged so far, with the reason."""
        return {v: why for v, why in self._checked.items() if why is not None}

    async def load_latest(self, structure):
        for version in reversed(await self.get_versions() or []):
            try:
                return await self.load(version, structure), version
            except Exception as e:  # noqa: BLE001 - any failure to load means: try an older one
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self._checked[version] = f"does not load ({type(e).__name__}: {reason})"
                log.warning("checkpoint %s does not load (%s); using an older one",
                            self.path_for(version), reason)
        damaged = self.damaged_versions()
        if damaged:
            listing = "; ".join(f"{self.path_for(v).name}: {why}" for v, why in sorted(damaged.items()))
            raise CheckpointError(
                f"{self._root}: no usable checkpoint ({listing}); delete {self._root} to train "
                "again from round 0, or start a new run with another --out")
        return None, 0

    async def save(self, program_state, version: int) -> None:
        path = self.path_for(version)
        if path.exists():  # stale: left by an earlier process that never completed it
            shutil.rmtree(path)
        await super().save(program_state, version)
        write_manifest(path)
        self._checked[version] = None
        self._prune(newest=version)

    def _prune(self, newest: int) -> None:
        """Removes complete versions beyond the newest `keep`, and leftovers older than `newest`."""
        complete = [v for v in self._marked_versions()
                    if v <= newest and self._checked.get(v) is None]  # unchecked: presumed intact
        keep = set(complete[-self._keep:])
        for entry in self._root.iterdir():
            if not entry.name.startswith(PREFIX):
                continue
            version = self._get_version_for_path(entry.name)
            if version is None:  # TFF's temporary directory of an interrupted save
                stem = entry.name[len(PREFIX):].split("_temp", 1)[0]
                version = int(stem) if stem.isdigit() else None
                if version is not None and version <= newest:
                    shutil.rmtree(entry, ignore_errors=True)
            elif version < newest and version not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                self._checked.pop(version, None)


class CheckpointManager(VerifiedStateManager):
    """The training program's state: saved every `every` rounds (and the
    first and last), the newest three kept."""

    def __init__(self, root_dir: Path, every: int, last_round: int, keep: int = 3):
        super().__init__(root_dir, keep=keep)
        self._every = every
        self._last_round = last_round

    async def save(self, program_state, version: int) -> None:
        if version % self._every and version != self._last_round:
            return
        await super().save(program_state, version)

    def latest_round(self) -> int | None:
        """The newest complete, intact checkpoint's round (None if there is none)."""
        versions = [v for v in self._marked_versions() if self._damage(v) is None]
        return max(versions) if versions else None
