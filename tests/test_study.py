"""The study layer: the plan as data, --dry-run, and the executors. The smoke study runs sequentially, on 2 local
worker processes (one of which is killed mid-job) and on a local Ray instance, and every executor must give the
same synthetic images and the same test predictions."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medsyn import config as configs
from medsyn.cli import main
from medsyn.study import build_plan
from medsyn.study.jobs import Study, run_job

SMOKE = configs.preset("smoke")


def test_plan_pairs_each_replicate_with_its_generator():
    config = dataclasses.replace(SMOKE, seeds=(10, 11, 12), n_generators=2, arms=("real", "real+synth@1", "synth"))
    plan = {job.name: job for job in build_plan(config, n_train=4708)}
    assert [n for n in plan if n.startswith("gan/")] == ["gan/cgan/g0", "gan/cgan/g1"]
    assert [plan[n].params["seed"] for n in ("gan/cgan/g0", "gan/cgan/g1")] == [10, 11]   # disjoint seeds, disjoint GANs
    for r, seed in enumerate(config.seeds):
        assert plan[f"arms/real+synth@1/seed{seed}"].deps == ("data", f"synthetic/cgan/g{config.generator_of(r)}")
        assert plan[f"arms/real/seed{seed}"].deps == ("data",)
    assert [config.generator_of(r) for r in range(3)] == [0, 1, 0]
    assert set(plan["evaluate"].deps) == {n for n in plan if n.startswith("arms/")}
    names = list(plan)
    assert all(names.index(d) < names.index(n) for n, job in plan.items() for d in job.deps)   # a valid order


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--seeds", "3-5", "--gan-seeds", "2", "--out", str(out),
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "21 jobs: 1 data, 2 generator, 2 synthesize, 2 audit, 12 classify, 1 evaluate, 1 report" in printed
    assert "arms/real+synth@1/seed5" in printed and "estimated wall time with" in printed
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "1,1"], "distinct"), (["--seeds", "a-b"], "non-negative integers"),
    (["--gan-seeds", "3"], "between 1 and the number of replicates"),
    (["--workers", "0"], "--workers 0: give a whole number from 1"),
    (["--min-effect", "0"], "between 0 and 1"),
    (["--arms", "real,real+heldout@1"], "draws real train images from outside a learning-curve subset"),
    # these two are refused after the bundled data is loaded (its first load in a session runs the leak search)
    pytest.param(["--arms", "real,real+heldout@1", "--fractions", "0.6,1"],
                 "real train images outside the subset, and only", marks=pytest.mark.slow),
    pytest.param(["--arms", "real,real+heldout@2", "--fractions", "0.02,0.4"], "a lower dose", marks=pytest.mark.slow)])
def test_bad_study_flags_fail_before_any_folder_is_made(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_a_jobs_log_holds_the_progress_lines_of_its_stage(tmp_path):
    """RUN/logs/<job>.log receives what the stage logs while the job runs: every epoch of a classifier run."""
    config = dataclasses.replace(SMOKE, arms=("real",), seeds=(0,), n_generators=1)
    job = next(j for j in build_plan(config, n_train=4708) if j.name == "arms/real/seed0")
    run_job(job, Study(config, None, tmp_path))
    log = (tmp_path / "logs" / "arms_real_seed0.log").read_text()
    epochs = json.loads((tmp_path / "arms" / "real" / "seed0" / "val_metrics.json").read_text())["epochs_run"]
    assert re.findall(r"^epoch (\d+)/\d+: train loss", log, re.M) == [str(e) for e in range(1, epochs + 1)]


# The executor runs compare two of the smoke study's arms with the sequential smoke run: the pools are the same size
# (a synthetic-only arm draws one synthetic image per real one, as real+synth@1 does).
EXECUTOR_ARMS = ("real", "synth")


def _outputs(run: Path, arms=None) -> dict[str, bytes]:
    """What must not depend on the executor: the synthetic pools and every test prediction (of `arms`: all)."""
    files = sorted(run.glob("synthetic/*/g*/synthetic.npz")) + \
        sorted(f for f in run.glob("arms/*/seed*/predictions.csv") if arms is None or f.parent.parent.name in arms)
    assert files
    return {str(f.relative_to(run)): _content(f) for f in files}


def _content(path: Path):
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return {k: npz[k].tobytes() for k in npz.files}
    return path.read_bytes()


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]


@pytest.mark.slow
def test_local_workers_survive_a_killed_worker_and_match_the_sequential_run(request, tmp_path):
    out = tmp_path / "local"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "medsyn", "run", "--preset", "smoke", "--workers", "2",
                                "--arms", ",".join(EXECUTOR_ARMS), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("logs/gan_cgan_g*.log")):          # a worker is inside a generator job
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    workers = [pid for pid in _children(process.pid)
               if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    printed, _ = process.communicate(timeout=600)
    assert process.returncode == 0, printed
    assert "retrying" in printed and "13/13 jobs done, 0 failed" in printed
    # asked for only now: another test process may be building it meanwhile (tests/once.py)
    assert _outputs(out) == _outputs(request.getfixturevalue("smoke_run"), EXECUTOR_ARMS)


@pytest.mark.slow
def test_ray_executor_runs_the_smoke_study_on_a_local_instance(request, tmp_path):
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["run", "--preset", "smoke", "--executor", "ray", "--arms", ",".join(EXECUTOR_ARMS),
                     "--out", str(out)]) == 0
    finally:
        ray.shutdown()
    timings = json.loads((out / "timings.json").read_text())["jobs"]
    assert len(timings) == 13 and (out / "report.html").exists()
    assert _outputs(out) == _outputs(request.getfixturevalue("smoke_run"), EXECUTOR_ARMS)
