"""The app tests' trained run (export, predict, serve, the browser, the trained-model checks), loaded as a plugin by
conftest.py. A session's first test that asks for it trains two tiny classifiers on a quarter of the bundled data,
so every test that uses these fixtures is marked `slow`."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import numpy as np
import pytest

from medsyn import classify
from medsyn.app import export_model
from medsyn.fileio import write_json
from medsyn.stats.paired import summarize_arms
from once import built_once
from tiny import TINY_CLASSIFY

APP_SEEDS = (0, 1)


@pytest.fixture(scope="session")
def app_dataset(bundled):
    """The bundled PneumoniaMNIST (28 px) with every 4th training image, and its full val and test splits."""
    train_index = np.flatnonzero(bundled.split == "train")
    keep = bundled.split != "train"
    keep[train_index[::4]] = True
    return bundled.select(keep)


@pytest.fixture(scope="session")
def app_run(app_dataset, tmp_path_factory):
    """A run folder as `medsyn run` lays it out: arms/real/seed{0,1}/ from the real `train_arm` (the tiny classifier
    for two epochs of 64 images a step: after one epoch, seed 1 was still at chance on val, AUC 0.47) and
    results.json from `summarize_arms` over their test predictions."""
    def build(run):
        config = dataclasses.replace(TINY_CLASSIFY, epochs=2, batch_size=64)
        seed_dirs = {seed: run / "arms" / "real" / f"seed{seed}" for seed in APP_SEEDS}
        for seed, folder in seed_dirs.items():
            classify.train_arm(app_dataset, "real", seed, config, folder)
        predictions = {"real": {seed: classify.read_predictions(folder) for seed, folder in seed_dirs.items()}}
        write_json(run / "results.json", summarize_arms(predictions, {}, n_bootstrap=200, seed=0))

    return built_once(tmp_path_factory, "app-run", build)


@pytest.fixture(scope="session")
def app_model(app_run, tmp_path_factory):
    """The exported model file of the run's best seed."""
    path = tmp_path_factory.mktemp("app-model") / "model.pt"
    export_model(app_run, path, arm="real")
    return path


@pytest.fixture(scope="session")
def live_server(app_model):
    """The real app on real uvicorn, on a free loopback port, in a background thread; yields its base URL."""
    import httpx  # the web stack is imported only where a test serves
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
