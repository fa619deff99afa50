"""Long test variants (`@pytest.mark.full`) run only on request.

    .venv/bin/python -m pytest --full   # everything, long variants included
    FEDKB_FULL_TESTS=1 make test      # the same through the README's command
"""

import os
import sys

import pytest


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the long variants marked @pytest.mark.full")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full") or os.environ.get("FEDKB_FULL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long variant: run with `pytest --full` or FEDKB_FULL_TESTS=1")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """Drops TFF's default context (if a test imported TFF) while Python is still whole,
    as the CLI does: left to interpreter exit, its __del__ prints a traceback."""
    if "tensorflow_federated" in sys.modules:
        from fl_pipeline.training.runtime import release_tff_default_context

        release_tff_default_context()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny prepared corpus of tests/fl_helpers.py, shared by the training tests (read only)."""
    from fl_helpers import prepare_corpus

    return prepare_corpus(tmp_path_factory.mktemp("fl-data"))
