"""The plan's time estimates: measured on this machine once per settings (study/calibrate.py), carried into every
job's estimate, and turned into advice when a preset's budget is exceeded. How close an estimate comes to a real
run is measured by benchmarks/plan_accuracy.py (its results file), not here: a test machine's load varies."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from medsyn import config as configs
from medsyn.cli import main
from medsyn.data.cache import cache_root
from medsyn.study import budget_advice, build_plan
from medsyn.study.calibrate import BUSY_LOAD_PER_CORE, cached_speeds
from medsyn.study.plan import estimate_line, reference_speeds, simulate

TIMED_KINDS = ("generator", "synthesize", "audit", "classify")


@pytest.mark.slow
def test_this_machine_is_measured_once_per_settings_and_read_back_after(idle_machine):
    smoke = configs.preset("smoke")  # at a width no other test plans with, so this test measures it first
    config = dataclasses.replace(smoke, gan=dataclasses.replace(smoke.gan, base_width=smoke.gan.base_width + 3))
    folder = cache_root() / "calibration"
    before = set(folder.glob("*.json")) if folder.exists() else set()
    first = cached_speeds(config, reference_speeds(config))
    written = set(folder.glob("*.json")) - before
    assert len(written) == 1 and first.measured != "reference"
    stamp = next(iter(written)).stat().st_mtime_ns
    assert cached_speeds(config, reference_speeds(config)) == first  # read back, not measured again
    assert next(iter(written)).stat().st_mtime_ns == stamp
    assert first.gan_step_s["cgan"] > 0 and first.classify_aug_image_s > 0
    wider = dataclasses.replace(config, gan=dataclasses.replace(config.gan, base_width=config.gan.base_width * 2))
    cached_speeds(wider, reference_speeds(wider))
    assert len(set(folder.glob("*.json")) - before) == 2  # other settings: measured for themselves


@pytest.mark.slow
def test_a_measurement_on_a_busy_machine_is_used_once_and_said_but_not_kept(monkeypatch):
    smoke = configs.preset("smoke")  # at a width no other test plans with
    config = dataclasses.replace(smoke, gan=dataclasses.replace(smoke.gan, base_width=smoke.gan.base_width + 5))
    folder = cache_root() / "calibration"
    before = set(folder.glob("*.json")) if folder.exists() else set()
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (1 + cores * BUSY_LOAD_PER_CORE, 0.0, 0.0))  # 1: the measuring thread
    busy = cached_speeds(config, reference_speeds(config))
    assert busy.busy and busy.load_per_core == pytest.approx(BUSY_LOAD_PER_CORE)
    assert (set(folder.glob("*.json")) if folder.exists() else set()) == before     # nothing kept
    assert "measured while busy, load 0.50 per core" in estimate_line(build_plan(config, 300, busy), 2, busy)
    monkeypatch.setattr(os, "getloadavg", lambda: (1 + cores * BUSY_LOAD_PER_CORE * 0.9, 0.0, 0.0))
    idle = cached_speeds(config, reference_speeds(config))                            # measured again, and kept
    assert not idle.busy and len(set(folder.glob("*.json")) - before) == 1
    assert "busy" not in estimate_line(build_plan(config, 300, idle), 2, idle)


def test_the_classifier_is_timed_without_its_one_off_costs_and_one_slow_moment(monkeypatch):
    """A fake clock: every fit costs 0.2 s plus 10 ms a step, the first one 1 s more (kernels chosen, buffers
    allocated), and one timed long fit 5 s more (another process took the core). The cost of a step comes out."""
    from medsyn.classify import train
    from medsyn.study import calibrate

    clock, calls = [0.0], []

    def fake_fit(*args, steps_per_epoch, **kwargs):
        calls.append(steps_per_epoch)
        clock[0] += 0.2 + 0.01 * steps_per_epoch + (1.0 if len(calls) == 1 else 0) + (5.0 if len(calls) == 3 else 0)

    monkeypatch.setattr(train, "fit", fake_fit)
    monkeypatch.setattr(calibrate.time, "perf_counter", lambda: clock[0])
    config = configs.preset("smoke")
    seconds = calibrate._classify_image_seconds(config, calibrate._random_images(config), augment=False)
    assert seconds == pytest.approx(0.01 / config.classify.batch_size)


def test_the_machine_factor_is_measured_at_one_setting_whatever_the_runs(monkeypatch):
    """A fake machine whose classifier time grows with width and pixels unlike the reference's guess: the factor
    that scales the audit and the small jobs is the same for a 28 px run and a 64 px one at half the width."""
    from medsyn.study import calibrate

    def fake_classifier(config, data, augment):
        return 1e-3 * config.classify.width / 0.125 * (max(config.gan.size, 32) / 32) ** 1.5

    monkeypatch.setattr(calibrate, "_classify_image_seconds", fake_classifier)
    monkeypatch.setattr(calibrate, "_gan_step_seconds", lambda gan, data: 0.1)
    quick = configs.preset("quick")
    factors = {size: calibrate.measure(configs.preset("quick", size), reference_speeds(configs.preset("quick", size)))
               .machine_factor for size in (28, 64)}
    assert factors[28] == factors[64] == pytest.approx(1e-3 / reference_speeds(quick).classify_image_s)


def test_a_run_whose_classifier_is_the_machine_factors_times_it_once(monkeypatch):
    from medsyn.study import calibrate

    timed = []

    def fake_classifier(config, data, augment):
        timed.append((config.gan.size, config.classify.width, augment))
        return 1e-3 * (2 if augment else 1)

    monkeypatch.setattr(calibrate, "_classify_image_seconds", fake_classifier)
    monkeypatch.setattr(calibrate, "_gan_step_seconds", lambda gan, data: 0.1)
    for size in (28, 64):
        config = configs.preset("quick", size)
        speeds = calibrate.measure(config, reference_speeds(config))
        assert (speeds.classify_image_s, speeds.classify_aug_image_s) == (1e-3, 2e-3)
    quick, at_64 = configs.preset("quick").classify.width, configs.preset("quick", 64).classify.width
    assert timed == [(28, quick, False), (28, quick, True), (28, quick, False), (64, at_64, False), (64, at_64, True)]


def test_every_timed_job_takes_as_long_as_its_measured_speed_says():
    config = configs.preset("quick")
    reference = reference_speeds(config)
    base, slow = (build_plan(config, 4708, s) for s in (reference, reference.scaled(3.0, 3.0, 3.0)))
    for one, three in zip(base, slow):
        if one.kind in TIMED_KINDS:
            assert three.estimate_s == pytest.approx(3 * one.estimate_s), one.name
        else:
            assert three.estimate_s == one.estimate_s


@pytest.mark.parametrize("size, speed, expected", [(64, 0.6, "--size 32 ("), (28, 1.1, "--seeds 0,1,2 ("),
                                                    (28, 1.2, "--seeds 0,1 (")])
def test_a_plan_over_its_budget_says_so_and_offers_only_what_fits(size, speed, expected):
    """`speed`: this machine's time over the reference's (0.6: the machine of this project that ran the quick
    preset in 9.5 min)."""
    config = configs.preset("quick")
    fast = reference_speeds(config).scaled(0.6, 0.6, 0.6)
    plan = build_plan(config, 4708, fast)
    assert simulate(plan, 2) / 60 <= config.budget_minutes
    assert budget_advice(config, plan, 4708, fast, workers=2) == ""
    sized = dataclasses.replace(config, gan=dataclasses.replace(config.gan, size=size),
                                data=dataclasses.replace(config.data, size=size))
    slower = reference_speeds(sized).scaled(speed, speed, speed)
    advice = budget_advice(sized, build_plan(sized, 4708, slower), 4708, slower, workers=2)
    assert f"exceeds the quick preset's budget of {config.budget_minutes:g} min" in advice
    offered = re.findall(r"(--\S+ \S+) \(.*?about (\d+) min\)", advice)
    assert len(offered) == 1 and all(int(minutes) <= config.budget_minutes for _, minutes in offered)
    assert expected in advice and "GPU" in advice


def test_a_smaller_size_offered_is_estimated_with_that_sizes_generator_and_classifier():
    at_64, at_32 = configs.preset("quick", 64), configs.preset("quick", 32)
    assert at_64.gan.steps < at_32.gan.steps  # the quick cgan's 64 px schedule is shorter, and cheaper a step:
    assert (at_64.gan.mbstd_group, at_32.gan.mbstd_group) == (0, 8)  # no minibatch std layer at 64 px,
    assert at_64.classify.width == at_32.classify.width / 2            # and a narrower classifier
    slow = reference_speeds(at_64).scaled(0.9, 0.9, 0.9)
    at_32_speeds = reference_speeds(at_32).scaled(0.9, 0.9, 0.9)  # the same machine, 0.9x the reference's time
    expected = simulate(build_plan(at_32, 4708, at_32_speeds), 2) / 60
    plan = build_plan(at_64, 4708, slow)
    between = dataclasses.replace(at_64, budget_minutes=(expected + simulate(plan, 2) / 60) / 2)
    assert f"--size 32 (about {expected:.0f} min)" in budget_advice(between, plan, 4708, slow, workers=2)


@pytest.mark.slow
def test_dry_run_names_the_speeds_its_estimate_comes_from(capsys, idle_machine):
    assert main(["run", "--preset", "smoke", "--dry-run"]) == 0
    assert re.search(r"this machine's speeds \(measured .+; [\d.]+x the reference's time\)", capsys.readouterr().out)


def test_each_points_first_audit_carries_the_encoders_training_in_proportion_to_its_images():
    """The first audit of a learning-curve point trains the audit's encoder (cached for the point's other audits):
    its extra time over the point's second audit grows in proportion to the point's train images."""
    config = dataclasses.replace(configs.preset("quick"), train_sizes=(0.1, 0.4))
    audits: dict[str, list[float]] = {}
    for job in build_plan(config, 4708):
        if job.kind == "audit":
            audits.setdefault(job.params["prefix"], []).append(job.estimate_s)
    small, large = (audits[f"sizes/f{s:g}/"] for s in config.train_sizes)
    assert len(small) == len(large) == config.n_generators
    small_extra, large_extra = small[0] - small[1], large[0] - large[1]
    assert small_extra > 0 and large_extra / small_extra == pytest.approx(0.4 / 0.1, rel=1e-3)


def test_the_plans_wall_time_follows_the_executor_and_leaves_no_slot_idle_while_a_job_is_ready():
    """Two slots: a 10 s generator and a 10 s classifier start; at 10 s the pool's synthesis (2 s, after the
    generator) and the second classifier start; the run ends at 20 s. A slot held for the synthesis before its
    generator finished would idle and end it at 22."""
    from medsyn.study.plan import Job

    plan = [Job("gan", "generator", {}, "gan.pt", estimate_s=10), Job("pool", "synthesize", {}, "pool.json", ("gan",),
                                                                        estimate_s=2),
            Job("arm1", "classify", {}, "a1.json", estimate_s=10), Job("arm2", "classify", {}, "a2.json", estimate_s=10)]
    assert simulate(plan, 2) == 20
    assert simulate(plan, 1) == 32
