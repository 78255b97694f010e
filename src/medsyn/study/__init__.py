"""The study layer: the jobs of a run (plan.py), their bodies (jobs.py) and the executors that run them
(execute.py: sequential, local processes, Ray).

Public API:
    build_plan(config, n_train, speeds=None) -> list[Job]   describe(plan, workers, speeds) -> str (--dry-run)
    budget_advice(config, plan, n_train, speeds, workers) -> str  what would fit the preset's budget, where it is exceeded
    Study(config, src, run_dir)                   what every job of a run shares
    execute(plan, study, executor="local", workers=None, ray_address=None, progress=True) -> timings dict
    evaluate_run(study) -> dict                   results.json from the finished runs' files
"""

from medsyn.study.execute import EXECUTORS, check_executor, default_workers, execute
from medsyn.study.jobs import Study, evaluate_run, run_job
from medsyn.study.plan import Job, budget_advice, build_plan, describe, generator_seeds

__all__ = ["EXECUTORS", "check_executor", "Job", "Study", "budget_advice", "build_plan", "default_workers", "describe", "evaluate_run", "execute",
           "generator_seeds", "run_job"]
