"""The GPU path without a GPU: which jobs ask for a share of a card, that the scheduler never puts more on a card
than it holds, the run flags that shrink a large preset for a check, and benchmarks/gpu_check.sh's CPU fallback
(on a CUDA machine the same script runs the GPU side; its output is in the issue's closing note)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from medsyn import config as configs
from medsyn.cli import main
from medsyn.study import build_plan
from medsyn.study.execute import _fitting
from medsyn.study.plan import GPU_KINDS, JOBS_PER_GPU, with_gpus

ROOT = Path(__file__).resolve().parents[1]


def test_jobs_ask_for_a_gpu_share_only_where_a_gpu_can_be_used():
    config = configs.preset("smoke")
    plan = build_plan(config, n_train=4708)
    shared = with_gpus(plan, config, gpus=1)
    assert {j.kind for j in shared if j.gpus} == set(GPU_KINDS)
    assert all(j.gpus == 1 / JOBS_PER_GPU for j in shared if j.kind in GPU_KINDS)
    assert all(j.gpus == 0 for j in shared if j.kind not in GPU_KINDS)
    assert all(j.gpus == 0 for j in with_gpus(plan, config, gpus=0))  # Ray would wait forever for a GPU
    on_cpu = dataclasses.replace(config, classify=dataclasses.replace(config.classify, device="cpu"))
    assert all(j.gpus == 0 for j in with_gpus(plan, on_cpu, gpus=1))


def test_the_scheduler_never_puts_more_jobs_on_a_card_than_its_shares():
    config = configs.preset("smoke")
    jobs = with_gpus(build_plan(config, n_train=4708), config, gpus=1)
    gpu_jobs = [j for j in jobs if j.gpus][:JOBS_PER_GPU + 2]
    cpu_jobs = [j for j in jobs if not j.gpus][:2]
    idle = SimpleNamespace(slots=16, gpus=1, running=[])
    chosen = _fitting(gpu_jobs + cpu_jobs, idle)
    assert [j for j in chosen if j.gpus] == gpu_jobs[:JOBS_PER_GPU] and cpu_jobs[0] in chosen
    busy = SimpleNamespace(slots=16, gpus=1, running=gpu_jobs[:JOBS_PER_GPU - 1])
    assert [j for j in _fitting(gpu_jobs[JOBS_PER_GPU - 1:], busy) if j.gpus] == [gpu_jobs[JOBS_PER_GPU - 1]]
    assert _fitting(gpu_jobs, SimpleNamespace(slots=16, gpus=0, running=[])) == []
    assert len(_fitting(cpu_jobs, SimpleNamespace(slots=1, gpus=0, running=[]))) == 1


def _estimates(capsys, *flags: str) -> dict[str, float]:
    assert main(["run", "--dry-run", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {m[1]: float(m[2]) for m in (re.match(r"\s+(\S+)\s+~\s*([\d.]+) s", line) for line in lines) if m}


@pytest.mark.slow
@pytest.mark.parametrize("gan", ["cgan", "ddpm"])
def test_gan_steps_and_epochs_shrink_the_primary_generator_and_the_classifiers(capsys, gan, idle_machine):
    base = _estimates(capsys, "--preset", "full", "--gan", gan, "--gan-steps", "400", "--epochs", "4")
    half = _estimates(capsys, "--preset", "full", "--gan", gan, "--gan-steps", "200", "--epochs", "2")
    generator = next(name for name in base if name.endswith(f"gan/{gan}/g0"))
    classifier = next(name for name in base if name.endswith("arms/real/seed0"))
    assert base[generator] == pytest.approx(2 * half[generator], rel=0.01)
    assert base[classifier] - 2 == pytest.approx(2 * (half[classifier] - 2), rel=0.01)  # 2 s fixed per job


def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(tmp_path, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["run", "--preset", "smoke", "--device", "cuda:1", "--out", str(tmp_path / "run")]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_gpu_check_script_runs_its_cpu_side_where_there_is_no_gpu(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    import torch

    if torch.cuda.is_available():
        assert result["throughput"]["gan_gpu_over_cpu"] > 0
        return
    assert "no CUDA GPU is visible to torch" in done.stdout
    assert set(result["throughput"]) == {"gan_cpu", "classify_cpu"}
    assert result["throughput"]["classify_cpu"]["images_per_epoch"] == 128  # the subset it cut, one pass
    assert len(result["run_jobs"]) == 10 and not any(job["gpus"] for job in result["run_jobs"].values())
    assert set(result["run_test_auc"]) == {"real", "real+synth@1"}
    again = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # never writes into an existing folder
