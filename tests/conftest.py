"""Shared fixtures: a private cache for every test session, and paths to the committed real data."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CHEST_XRAY_SMALL = FIXTURES / "chest_xray_small"
CHEST_XRAY_3CLASS = FIXTURES / "chest_xray_3class.csv"
DICOM_DIR = FIXTURES / "dicom"
DICOM_REFERENCE = FIXTURES / "dicom_reference"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Each test session decodes into its own cache, so tests never see a user's cache or each other's leftovers."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDSYN_CACHE", str(tmp_path_factory.mktemp("medsyn-cache")))
    yield
    patch.undo()
