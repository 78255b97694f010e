"""`medsyn run --preset smoke` end to end on the bundled data, its resume, and the report it writes."""

from __future__ import annotations

import html
import json
import re
import shutil

import pytest

from medsyn.cli import main


@pytest.mark.slow
def test_smoke_run_writes_every_stage(smoke_run):
    for name in ("config.json", "data.json", "results.json", "timings.json", "report.html", "summary.md",
                 "gan/cgan/g0/final.pt", "gan/cgan/g1/final.pt", "synthetic/cgan/g1/synthetic.npz",
                 "audit/cgan/g0/audit.json", "logs/arms_real_seed0.log"):
        assert (smoke_run / name).exists(), name
    config = json.loads((smoke_run / "config.json").read_text())
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["split"] == "test" and results["n_test"] == 624
    assert set(results["arms"]) == set(config["arms"])
    assert results["replicates"] == config["seeds"]
    for arm in config["arms"]:
        auc = results["arms"][arm]["auc"]
        assert auc["ci_low"] < auc["mean"] < auc["ci_high"] and len(auc["per_replicate"]) == len(config["seeds"])
    pairs = {(c["arm"], c["control"]) for c in results["comparisons"]}
    assert pairs == {("synth", "real"), ("real+synth@1", "real")}      # real+aug uses no synthetic images
    keys = {"arm", "control", "metric", "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "n_replicates",
            "between_replicate_sd", "test_sampling_sd", "verdict"}
    assert all(keys <= set(c) for c in results["comparisons"])
    assert results["generators"] == {"0": "cgan g0", "1": "cgan g1"}
    timings = json.loads((smoke_run / "timings.json").read_text())["jobs"]
    assert len(timings) == 17 and {j["kind"] for j in timings.values()} == {
        "data", "generator", "synthesize", "audit", "classify", "evaluate", "report"}


@pytest.mark.slow
def test_report_holds_verdict_arm_table_and_figures(smoke_run):
    page = (smoke_run / "report.html").read_text()
    results = json.loads((smoke_run / "results.json").read_text())
    from medsyn.report.verdict import headline

    assert "Verdict" in page and html.escape(headline(results)) in page
    real_auc = results["arms"]["real"]["auc"]
    assert f"{real_auc['mean']:.3f}" in page                       # the arm table is computed from results.json
    for arm in results["arms"]:
        assert f"<td>{arm}</td>" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 6   # grids, losses, forest, ROC, CM, gallery
    assert "test split" in page.lower() and "Audit of the synthetic images" in page
    summary = (smoke_run / "summary.md").read_text()
    assert "| real |" in summary and "Verdict" in summary


@pytest.mark.slow
def test_report_verb_rebuilds_the_report(smoke_run, capsys):
    (smoke_run / "report.html").unlink()
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report.html").exists() and "report.html" in capsys.readouterr().out


@pytest.mark.slow
def test_existing_run_is_not_overwritten_without_resume(smoke_run, capsys):
    before = (smoke_run / "results.json").read_bytes()
    assert main(["run", "--preset", "smoke", "--out", str(smoke_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (smoke_run / "results.json").read_bytes() == before


@pytest.mark.slow
def test_resume_redoes_only_what_is_missing(smoke_run):
    config = json.loads((smoke_run / "config.json").read_text())
    kept = smoke_run / "arms" / "real" / "seed0" / "test_metrics.json"
    gan_checkpoint = smoke_run / "gan" / "cgan" / "g1" / "final.pt"
    audit = smoke_run / "audit" / "cgan" / "g1" / "audit.json"
    stamps = {p: p.stat().st_mtime_ns for p in (kept, gan_checkpoint, audit)}
    lost = smoke_run / "arms" / config["arms"][-1] / f"seed{config['seeds'][-1]}"
    shutil.rmtree(lost)                                             # as if the run was killed during this arm
    assert main(["run", "--preset", "smoke", "--executor", "sequential", "--out", str(smoke_run), "--resume"]) == 0
    assert (lost / "test_metrics.json").exists()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps      # finished work was not redone


@pytest.mark.slow
def test_resume_with_another_config_is_refused(smoke_run, capsys):
    assert main(["run", "--preset", "quick", "--out", str(smoke_run), "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert main(["run", "--preset", "smoke", "--out", str(smoke_run), "--resume", "--epochs", "2"]) == 2
    assert "classify.epochs differ" in capsys.readouterr().err
    # where a run runs is not what it is: another device continues it
    assert main(["run", "--preset", "smoke", "--executor", "sequential", "--out", str(smoke_run), "--resume",
                 "--device", "cpu"]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--gan", ","], "choose one or more of cgan, acgan"),
    (["--gan", "dcgan"], "choose one or more of cgan, acgan"),
    (["--size", "50"], "the GANs work at"),
])
def test_bad_run_flags_fail_before_any_folder_is_made(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
