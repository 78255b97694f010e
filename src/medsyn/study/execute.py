"""Run a plan: in this process (`sequential`), on local worker processes (`local`, the default) or as Ray tasks
(`ray`). One scheduling loop serves all three: it submits every job whose dependencies are done (generators and
long jobs first), waits for any to finish, and repeats. A job whose `done_file` exists is skipped, so a rerun
resumes. A job that fails with anything but a MedsynError (bad input, reported at once) is retried once; after that
it is reported, its dependents are skipped, and every other job goes on.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from medsyn.errors import MedsynError
from medsyn.fileio import read_json, write_json
from medsyn.study.jobs import Study, run_job
from medsyn.study.plan import Job, ready_jobs, with_gpus

EXECUTORS = ("local", "sequential", "ray")
ATTEMPTS = 2  # a job is tried at most twice


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_executor(executor: str, ray_address: str | None) -> None:
    """Before the run folder is made: Ray is installed for --executor ray, and a --ray-address is host:port (or
    ray://host:port) with something listening there; `auto` and `local` are left to Ray."""
    import importlib.util
    import socket

    if ray_address and executor != "ray":
        raise MedsynError(f"--ray-address applies to --executor ray, not {executor}.")
    if executor != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise MedsynError("--executor ray needs Ray: pip install 'medsyn[ray]' (or pip install 'ray[default]').")
    if not ray_address or ray_address in ("auto", "local"):
        return
    host, _, port = ray_address.removeprefix("ray://").rpartition(":")
    fix = ("give the address `ray start --head` printed (HOST:PORT), or leave out --ray-address to start a local "
           "instance")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MedsynError(f"--ray-address {ray_address!r} is not HOST:PORT; {fix}.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as err:
        raise MedsynError(f"--ray-address {ray_address}: no Ray cluster answers there ({err.strerror or err}); "
                          f"{fix}.") from None


def execute(plan: list[Job], study: Study, executor: str = "local", workers: int | None = None,
            ray_address: str | None = None, progress: bool = True) -> dict:
    """Run every unfinished job of `plan`; record per-job seconds in RUN/timings.json; raise a MedsynError naming
    the failed jobs (after all the others ran) if any failed."""
    backend = _backend(executor, workers or default_workers(), ray_address)
    plan = with_gpus(plan, study.config, backend.gpus)
    display = Progress(plan, backend.slots, enabled=progress)
    timings = Timings(study.run_dir / "timings.json")
    done = {j.name for j in plan if (study.run_dir / j.done_file).exists()}
    pending = [j for j in plan if j.name not in done]
    attempts: dict[str, int] = {}
    failed: dict[str, str] = {}
    display.start(done)
    try:
        while pending or backend.running:
            blocked = [j for j in pending if any(d in failed for d in j.deps)]
            for job in blocked:
                failed[job.name] = f"skipped: needs {', '.join(d for d in job.deps if d in failed)}"
                pending.remove(job)
            for job in _fitting(ready_jobs(pending, done), backend):
                attempts[job.name] = attempts.get(job.name, 0) + 1
                backend.submit(job, study)
                pending.remove(job)
            if not backend.running:
                break
            for job, outcome in backend.wait():
                if isinstance(outcome, dict):
                    done.add(job.name)
                    timings.record(job, outcome)
                elif isinstance(outcome, MedsynError) or attempts[job.name] >= ATTEMPTS:
                    failed[job.name] = _describe(outcome)
                else:
                    pending.append(job)
                display.update(job, done, failed, backend.running)
    finally:
        backend.close()
    display.finish(done, failed)
    if failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
        raise MedsynError(f"{len(failed)} of {len(plan)} jobs did not finish (every other job did):\n{lines}\n"
                          f"their logs are in {study.run_dir / 'logs'}; fix the cause and rerun with --resume.")
    return timings.stages


def _fitting(ready: list[Job], backend) -> list[Job]:
    """The ready jobs, in order, that fit the free worker slots and the GPUs' free shares."""
    slots = backend.slots - len(backend.running)
    free_gpu = backend.gpus - sum(j.gpus for j in backend.running)
    chosen = []
    for job in ready:
        if len(chosen) < slots and job.gpus <= free_gpu + 1e-9:
            chosen.append(job)
            free_gpu -= job.gpus
    return chosen


def _describe(error: BaseException) -> str:
    if isinstance(error, MedsynError):
        return str(error)
    return f"{type(error).__name__}: {error} (tried {ATTEMPTS} times)"


def _backend(executor: str, workers: int, ray_address: str | None):
    if executor == "sequential":
        return SequentialBackend()
    if executor == "local":
        return LocalBackend(workers)
    if executor == "ray":
        return RayBackend(workers, ray_address)
    raise MedsynError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}.")


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


class SequentialBackend:
    """Each job in this process, one at a time: for debugging and for the tests' reference results."""
    slots = 1

    def __init__(self):
        self.gpus = _local_gpus()
        self.running: list[Job] = []
        self._study: Study | None = None

    def submit(self, job: Job, study: Study) -> None:
        self.running.append(job)
        self._study = study

    def wait(self):
        job, study = self.running.pop(), self._study
        try:
            return [(job, run_job(job, study))]
        except Exception as err:  # reported by the scheduler, retried unless it is bad input
            return [(job, err)]

    def close(self) -> None:
        pass


class LocalBackend:
    """`workers` processes on this machine (spawned: each imports torch afresh, never a forked copy of a
    threaded parent). A worker that dies takes the pool down with it: the jobs it was running are retried on a
    new pool; a job is idempotent, so retrying one that was only a bystander is safe."""

    def __init__(self, workers: int):
        import multiprocessing

        self.slots = max(1, workers)
        self.gpus = _local_gpus()
        self._context = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()
        self._futures: dict = {}

    @property
    def running(self) -> list[Job]:
        return list(self._futures.values())

    def submit(self, job: Job, study: Study) -> None:
        try:
            self._futures[self._pool.submit(run_job, job, study)] = job
        except BrokenProcessPool:
            self._renew()
            self._futures[self._pool.submit(run_job, job, study)] = job

    def wait(self):
        finished, _ = wait(list(self._futures), timeout=5.0, return_when=FIRST_COMPLETED)
        out = []
        for future in finished:
            job = self._futures.pop(future)
            error = future.exception()
            out.append((job, future.result() if error is None else error))
        if any(isinstance(outcome, BrokenProcessPool) for _, outcome in out):
            self._renew()
        return out

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.slots, mp_context=self._context, initializer=_exit_with_parent,
                                   initargs=(os.getpid(),))

    def _renew(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit when the process that started it is gone (killed, not shut down), instead of lingering."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class RayBackend:
    """The same jobs as Ray tasks with `num_cpus` = the job's threads (and `num_gpus`), writing into the same run
    folder, which must be on a filesystem every node sees. Connects to `address` (a running cluster), or starts a
    local instance with `workers` CPUs."""

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise MedsynError("--executor ray needs Ray: pip install 'medsyn[ray]' (or pip install 'ray[default]')."
                              ) from None
        self._ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": workers}
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self._remote = ray.remote(run_job)
        self._refs: dict = {}

    @property
    def running(self) -> list[Job]:
        return list(self._refs.values())

    def submit(self, job: Job, study: Study) -> None:
        ref = self._remote.options(num_cpus=job.threads, num_gpus=job.gpus, max_retries=0).remote(job, study)
        self._refs[ref] = job

    def wait(self):
        finished, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=5.0)
        out = []
        for ref in finished:
            job = self._refs.pop(ref)
            try:
                out.append((job, self._ray.get(ref)))
            except self._ray.exceptions.RayTaskError as err:
                out.append((job, err.as_instanceof_cause()))
            except self._ray.exceptions.RayError as err:  # the worker died
                out.append((job, err))
        return out

    def close(self) -> None:
        for ref in self._refs:
            self._ray.cancel(ref, force=True)


class Timings:
    """RUN/timings.json: per job its seconds, CPU seconds and peak memory; a resumed run adds to it."""

    def __init__(self, path):
        self.path = path
        self.stages = read_json(path) if path.exists() else {"jobs": {}}
        self.stages.setdefault("jobs", {})

    def record(self, job: Job, outcome: dict) -> None:
        self.stages["jobs"][job.name] = {"kind": job.kind, "finished_at": round(time.time(), 2), **outcome}
        write_json(self.path, self.stages)


class Progress:
    """One line per event for the whole study: jobs done / total, elapsed, ETA, and what each worker runs."""

    def __init__(self, plan: list[Job], slots: int, enabled: bool):
        self.plan, self.slots, self.enabled = {j.name: j for j in plan}, slots, enabled
        self.started = time.perf_counter()
        self.done_at_start: set[str] = set()

    def start(self, done: set[str]) -> None:
        self.started = time.perf_counter()
        self.done_at_start = set(done)
        if self.enabled:
            print(f"study: {len(self.plan)} jobs, {len(done)} already done, {self.slots} worker(s)", flush=True)

    def update(self, job: Job, done: set[str], failed: dict, running: list[Job]) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        status = "done" if job.name in done else "FAILED" if job.name in failed else "retrying"
        now = ", ".join(j.name for j in running) or "-"
        print(f"[{len(done):>3}/{len(self.plan)}] {_clock(elapsed)} elapsed, ETA {self._eta(done, elapsed)} | "
              f"{status}: {job.name} | running: {now}", flush=True)

    def finish(self, done: set[str], failed: dict) -> None:
        if self.enabled:
            print(f"study: {len(done)}/{len(self.plan)} jobs done, {len(failed)} failed, "
                  f"{_clock(time.perf_counter() - self.started)}", flush=True)

    def _eta(self, done: set[str], elapsed: float) -> str:
        """Remaining estimated work, scaled by how the finished jobs' estimates compare with the time taken."""
        finished = [self.plan[n].estimate_s for n in done - self.done_at_start]
        remaining = sum(j.estimate_s for n, j in self.plan.items() if n not in done)
        if not finished or elapsed <= 0:
            return "?"
        return _clock(remaining * elapsed / sum(finished))


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
