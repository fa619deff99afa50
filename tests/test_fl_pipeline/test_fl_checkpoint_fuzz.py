"""Random byte damage to saved checkpoints: loading falls back or stops cleanly, never crashes.

Real TFF program-state saves (SavedModels of a small structure holding a
client iterator, as the training program saves them), damaged by
hypothesis: bytes overwritten, files cut short or removed, markers
rewritten, in any of the versions. Loading must return exactly what some
intact version held, newest first, or raise `CheckpointError` when no
version is intact; anything else is a bug.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_pipeline.training.checkpoint_manifest import COMPLETE_MARKER, usable_versions
from fl_pipeline.training.checkpoints import CheckpointError, VerifiedStateManager
from fl_pipeline.training.client_data import SeededClientIterator

VERSIONS = (2, 4, 6)


def state_of(version: int):
    rng = np.random.default_rng(version)
    return {"weights": rng.normal(size=[40]).astype(np.float32),
            "round": np.int32(version),
            "iterator": SeededClientIterator(["a", "b", "c"], seed=1, round_num=version)}


STRUCTURE = state_of(0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints") / "checkpoints"
    manager = VerifiedStateManager(root)
    for version in VERSIONS:
        asyncio.run(manager.save(state_of(version), version))
    return root


def load_latest(root: Path):
    return asyncio.run(VerifiedStateManager(root).load_latest(STRUCTURE))


def test_intact_checkpoints_load_the_newest(pristine):
    state, version = load_latest(pristine)
    assert version == 6
    np.testing.assert_array_equal(state["weights"], state_of(6)["weights"])
    assert state["iterator"] == state_of(6)["iterator"]
    assert usable_versions(pristine) == (list(VERSIONS), {})


damage_strategy = st.lists(
    st.tuples(
        st.sampled_from(VERSIONS),
        st.sampled_from(["overwrite", "truncate", "remove", "marker"]),
        st.integers(min_value=0, max_value=10**6),  # which file
        st.integers(min_value=0, max_value=10**9),  # where in it
        st.binary(min_size=1, max_size=16),  # what goes there
    ),
    min_size=1, max_size=6)


def apply_damage(root: Path, version: int, how: str, which: int, where: int, data: bytes) -> None:
    path = root / f"program_state_{version}"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    if how == "marker":
        marker = path / COMPLETE_MARKER
        blob = bytearray(marker.read_bytes()) if marker.exists() else bytearray()
        position = where % (len(blob) + 1)
        marker.write_bytes(bytes(blob[:position]) + data + bytes(blob[position + len(data):]))
        return
    if not files:
        return
    file = files[which % len(files)]
    blob = file.read_bytes()
    if how == "remove":
        file.unlink()
    elif how == "truncate":
        file.write_bytes(blob[:where % max(len(blob), 1)])
    else:
        position = where % max(len(blob), 1)
        file.write_bytes(blob[:position] + data + blob[position + len(data):])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damages=damage_strategy)
def test_damaged_checkpoints_fall_back_to_an_intact_one_or_fail_cleanly(pristine, tmp_path, damages):
    root = tmp_path / f"case-{abs(hash(tuple(damages)))}"
    shutil.copytree(pristine, root)
    for damage in damages:
        apply_damage(root, *damage)
    untouched = [v for v in VERSIONS if v not in {d[0] for d in damages}]
    try:
        state, version = load_latest(root)
    except CheckpointError as e:
        assert not untouched, f"fell over although {untouched} were untouched"
        assert "no usable checkpoint" in str(e) and "\n" not in str(e)
        return
    assert version in VERSIONS and version >= max(untouched, default=0)
    expected = state_of(version)
    np.testing.assert_array_equal(state["weights"], expected["weights"])
    assert int(state["round"]) == version and state["iterator"] == expected["iterator"]
