"""Shared fixtures: a private cache for every test session, and paths to the committed real data."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CHEST_XRAY_SMALL = FIXTURES / "chest_xray_small"
CHEST_XRAY_3CLASS = FIXTURES / "chest_xray_3class.csv"
DICOM_DIR = FIXTURES / "dicom"
DICOM_REFERENCE = FIXTURES / "dicom_reference"
# The real data beside the repository (../shared/data), as tests/fixtures/make_fixtures.py finds it; tests that need
# it are skipped where it is absent.
SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
CHEST_XRAY_224 = SHARED_DATA / "chest_xray_224"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Each test session decodes into its own cache, so tests never see a user's cache or each other's leftovers."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MEDSYN_CACHE", str(tmp_path_factory.mktemp("medsyn-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`medsyn run --preset smoke` on the bundled data, in this process (the sequential executor): the reference
    the other executors are compared with."""
    from medsyn.cli import main

    out = tmp_path_factory.mktemp("run") / "smoke"
    assert main(["run", "--preset", "smoke", "--executor", "sequential", "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------- a trained run for the app tests (export, predict, serve)

APP_SEEDS = (0, 1)


@pytest.fixture(scope="session")
def app_dataset():
    """The bundled PneumoniaMNIST (28 px) with every 4th training image, and its full val and test splits."""
    import numpy as np

    from medsyn import data

    full = data.load()
    train_index = np.flatnonzero(full.split == "train")
    keep = full.split != "train"
    keep[train_index[::4]] = True
    return full.select(keep)


@pytest.fixture(scope="session")
def app_run(app_dataset, tmp_path_factory):
    """A run folder as `medsyn run` lays it out: arms/real/seed{0,1}/ from the real `train_arm` (two tiny epochs each:
    after one, seed 1 was still at chance on val, AUC 0.47) and results.json from `summarize_arms` over their test
    predictions."""
    from medsyn import classify
    from medsyn.config import ClassifyConfig
    from medsyn.stats.paired import summarize_arms
    from medsyn.fileio import write_json

    run = tmp_path_factory.mktemp("app-run")
    config = ClassifyConfig(width=0.0625, epochs=2, batch_size=64)
    seed_dirs = {seed: run / "arms" / "real" / f"seed{seed}" for seed in APP_SEEDS}
    for seed, folder in seed_dirs.items():
        classify.train_arm(app_dataset, "real", seed, config, folder)
    predictions = {"real": {seed: classify.read_predictions(folder) for seed, folder in seed_dirs.items()}}
    write_json(run / "results.json", summarize_arms(predictions, {}, n_bootstrap=200, seed=0))
    return run


@pytest.fixture(scope="session")
def app_model(app_run, tmp_path_factory):
    """The exported model file of the run's best seed."""
    from medsyn.app import export_model

    path = tmp_path_factory.mktemp("app-model") / "model.pt"
    export_model(app_run, path, arm="real")
    return path


@pytest.fixture(scope="session")
def live_server(app_model):
    """The real app on real uvicorn, on a free loopback port, in a background thread; yields its base URL."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from medsyn.app.server import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(app_model), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    assert httpx.get(url + "/api/model").status_code == 200
    yield url
    server.should_exit = True
    thread.join(timeout=10)
