"""Program-state checkpoints that are trusted only when complete and intact.

`VerifiedStateManager` is TFF's `FileProgramStateManager` plus a manifest
(`checkpoint_manifest`): a version counts only once its manifest is written
and its files still match it. Loading falls back from the newest version to
older ones when one is damaged or will not load, and says so; when every
version is damaged it stops with a clear error instead of silently training
from round 0. Old versions are removed only after the new one is complete,
so a failed write (disk full, read-only directory) never costs the last
good checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import tensorflow_federated as tff

from datasets.errors import first_line
from fl_pipeline.training.checkpoint_manifest import (PREFIX, CheckpointError, damage, marked_versions,
                                                      no_usable_checkpoint, version_of, write_manifest)
from fl_pipeline.training.releases import ReleaseBarrier

__all__ = ["CheckpointError", "CheckpointManager", "EvaluationState", "VerifiedStateManager"]

log = logging.getLogger(__name__)


class VerifiedStateManager(tff.program.FileProgramStateManager):
    """A `FileProgramStateManager` whose versions count only once complete and intact.

    `keep` complete versions are kept (older ones are removed after a new
    one is complete). Damaged versions found while loading are skipped with
    a warning; they stay on disk until training passes or reaches them again.
    """

    def __init__(self, root_dir: Path, keep: int = 5):
        # keep_total=0: TFF's own pruning is off; ours runs after the manifest.
        super().__init__(root_dir, prefix=PREFIX, keep_total=0, keep_first=False)
        self._root = Path(root_dir)
        self._keep = keep
        self._checked: dict[int, str | None] = {}  # version -> damage (None = intact)
        self._saving: set[int] = set()  # `train_model` saves in concurrent tasks

    def path_for(self, version: int) -> Path:
        return Path(self._get_path_for_version(version))

    def _marked_versions(self) -> list[int]:
        return marked_versions(self._root)

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
                reason = first_line(e)
                self._checked[version] = f"does not load ({type(e).__name__}: {reason})"
                log.warning("checkpoint %s does not load (%s); using an older one",
                            self.path_for(version), reason)
        damaged = self.damaged_versions()
        if damaged:
            raise no_usable_checkpoint(self._root, damaged)
        return None, 0

    async def save(self, program_state, version: int) -> None:
        path = self.path_for(version)
        if path.exists():  # stale: left by an earlier process that never completed it
            shutil.rmtree(path)
        self._saving.add(version)
        try:
            await super().save(program_state, version)
            write_manifest(path)
        finally:
            self._saving.discard(version)
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
            version = version_of(entry.name)
            if version is None:  # TFF's temporary directory of an interrupted save
                stem = entry.name[len(PREFIX):].split("_temp", 1)[0]
                version = int(stem) if stem.isdigit() else None
                if version is not None and version <= newest and version not in self._saving:
                    shutil.rmtree(entry, ignore_errors=True)
            elif version < newest and version not in keep and version not in self._saving:
                shutil.rmtree(entry, ignore_errors=True)
                self._checked.pop(version, None)


class CheckpointManager(VerifiedStateManager):
    """The training program's state: saved every `every` rounds (and the
    first and last), the newest three kept.

    A checkpoint of round N is written only after every release of rounds up
    to N (metrics, model) is on disk, so a resume never skips a round whose
    outputs a crash lost (`releases.ReleaseBarrier`)."""

    def __init__(self, root_dir: Path, every: int, last_round: int,
                 barrier: ReleaseBarrier | None = None, keep: int = 3):
        super().__init__(root_dir, keep=keep)
        self._every = every
        self._last_round = last_round
        self._barrier = barrier

    async def save(self, program_state, version: int) -> None:
        if version % self._every and version != self._last_round:
            return
        if self._barrier is not None:
            await self._barrier.wait_through(version)
        await super().save(program_state, version)


class EvaluationState(VerifiedStateManager):
    """The state of one held-out evaluation (TFF's `evaluation_of_train_round_N`).

    Always loads version 0, the weights being evaluated: TFF's evaluation
    loop resumes from the newest version, which after a crash can be the
    state after a round it already ran, and then runs one more, counting that
    round's clients twice. Starting over gives the uninterrupted run's figures."""

    async def load_latest(self, structure):
        if 0 in (await self.get_versions() or []):
            return await self.load(0, structure), 0
        return await super().load_latest(structure)
