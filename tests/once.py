"""Expensive session fixtures built once for all test processes: under pytest-xdist each worker is its own session,
so a fixture that trains or runs a study would otherwise be built once per worker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run by the first test process that asks, under a lock in the folder the processes share;
    every process gets its own copy of the folder, so a test may change its copy."""
    from filelock import FileLock  # a dependency of torch

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers
    shared, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed part way
            build(shared)
            done.touch()
    copy = tmp_path_factory.mktemp(name) / name
    shutil.copytree(shared, copy)
    return copy
