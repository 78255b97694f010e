"""Global fixtures: a private cache for every test session, the paths to the committed real data, and the smoke
run two files compare with. The shared tiny settings and small datasets are in tiny.py, the app tests' trained run
in fixtures_app.py; both are loaded here as plugins, so every test file can ask for their fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from once import built_once

pytest_plugins = ["tiny", "fixtures_app"]

FIXTURES = Path(__file__).parent / "fixtures"
CHEST_XRAY_SMALL = FIXTURES / "chest_xray_small"
CHEST_XRAY_3CLASS = FIXTURES / "chest_xray_3class.csv"
DICOM_DIR = FIXTURES / "dicom"
DICOM_REFERENCE = FIXTURES / "dicom_reference"
# The real data beside the repository (../shared/data), as tests/fixtures/make_fixtures.py finds it; tests that need
# it are skipped where it is absent.
SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
CHEST_XRAY_224 = SHARED_DATA / "chest_xray_224"


def pytest_configure(config):
    """Test processes share the cores instead of each taking all of them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from medsyn.study.execute import default_workers  # the cores this process may use

        torch.set_num_threads(max(1, default_workers() // workers))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Each test session decodes into its own cache, so tests never see a user's cache or each other's leftovers."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDSYN_CACHE", str(tmp_path_factory.mktemp("medsyn-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`medsyn run --preset smoke` on the bundled data, in the first test process that asks (the sequential
    executor): the reference the other executors are compared with."""
    from medsyn.cli import main

    def build(out):
        assert main(["run", "--preset", "smoke", "--executor", "sequential", "--out", str(out)]) == 0

    return built_once(tmp_path_factory, "smoke", build)


@pytest.fixture
def idle_machine(monkeypatch):
    """The system's load average as an idle machine's (the measuring thread alone), so that a measurement of this
    machine's speed is kept, and read back by the next plan, however loaded the test machine is."""
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))


def npz_with_damaged_member(path, **arrays):
    """An npz whose first member's data has one byte changed: its CRC-32 fails when the data is read (and when the
    header is, for a member smaller than zipfile's first read of 4 KiB)."""
    np.savez(path, **arrays)
    raw = bytearray(path.read_bytes())
    first = next(iter(arrays.values()))
    offset = raw.index(first.tobytes()[:64]) + 32
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path

