"""`medsyn run --preset smoke` end to end on the bundled data, its resume, and the report it writes."""

from __future__ import annotations

import html
import json
import re
import shutil

import numpy as np
import pytest

from medsyn.cli import main
from medsyn.report.verdict import verdicts


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def test_smoke_run_writes_every_stage(smoke_run):
    for name in ("config.json", "data.json", "results.json", "timings.json", "report.html", "summary.md",
                 "gan/cgan/final.pt", "synthetic/cgan/synthetic.npz", "audit/cgan/audit.json"):
        assert (smoke_run / name).exists(), name
    config = json.loads((smoke_run / "config.json").read_text())
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["split"] == "test" and results["n_test"] == 624
    assert set(results["arms"]) == set(config["arms"])
    assert results["seeds"] == config["seeds"]
    for arm in config["arms"]:
        auc = results["arms"][arm]["auc"]
        assert len(auc["per_seed"]) == len(config["seeds"])
        assert auc["mean"] == pytest.approx(np.mean(auc["per_seed"]))
        assert auc["ci_low"] < auc["ci_high"], "a bootstrap over 624 test images cannot have zero width"
    timings = json.loads((smoke_run / "timings.json").read_text())
    assert {"data", "gan:cgan", "synth:cgan", "audit:cgan", "classify", "evaluate", "report"} <= set(timings)


def test_report_holds_verdict_arm_table_and_figures(smoke_run):
    page = (smoke_run / "report.html").read_text()
    results = json.loads((smoke_run / "results.json").read_text())
    results = json.loads((smoke_run / "results.json").read_text())
    texts = [v["text"] for v in verdicts(results, "auc")]
    assert "Verdict" in page and texts and all(html.escape(text) in page for text in texts)
    real_auc = results["arms"]["real"]["auc"]
    assert f"{real_auc['mean']:.3f}" in page                       # the arm table is computed from results.json
    for arm in results["arms"]:
        assert f"<td>{arm}</td>" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 6   # grids, losses, forest, ROC, CM, gallery
    assert "test split" in page.lower() and "Audit of the synthetic images" in page
    summary = (smoke_run / "summary.md").read_text()
    assert "| real |" in summary and "Verdict" in summary


def test_report_verb_rebuilds_the_report(smoke_run, capsys):
    (smoke_run / "report.html").unlink()
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report.html").exists() and "report.html" in capsys.readouterr().out


def test_existing_run_is_not_overwritten_without_resume(smoke_run, capsys):
    before = (smoke_run / "results.json").read_bytes()
    assert main(["run", "--preset", "smoke", "--out", str(smoke_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (smoke_run / "results.json").read_bytes() == before


def test_resume_redoes_only_what_is_missing(smoke_run):
    config = json.loads((smoke_run / "config.json").read_text())
    kept = smoke_run / "arms" / "real" / "seed0" / "test_metrics.json"
    gan_checkpoint = smoke_run / "gan" / "cgan" / "final.pt"
    audit = smoke_run / "audit" / "cgan" / "audit.json"
    stamps = {p: p.stat().st_mtime_ns for p in (kept, gan_checkpoint, audit)}
    lost = smoke_run / "arms" / config["arms"][-1] / f"seed{config['seeds'][-1]}"
    shutil.rmtree(lost)                                             # as if the run was killed during this arm
    assert main(["run", "--preset", "smoke", "--out", str(smoke_run), "--resume"]) == 0
    assert (lost / "test_metrics.json").exists()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps      # finished work was not redone


def test_resume_with_another_config_is_refused(smoke_run, capsys):
    assert main(["run", "--preset", "quick", "--out", str(smoke_run), "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().err


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
