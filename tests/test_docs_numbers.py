"""Numbers in the documentation come from files. Every results file that the README or a docstring names exists;
every results file carries the reference speed of the machine that made it (benchmarks/common.py), or says why it
has none; and the README and the source name only presets, arms and files that exist."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from medsyn.classify import parse_arm
from medsyn.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: the results file's fields)

CITED_RESULTS = re.compile(r"benchmarks/results/[\w{},*.+-]+?\.json")
# a path with a folder: from the repository's root (src/..., benchmarks/...) or from the package's (study/plan.py)
REPO_PATH = re.compile(r"(?<![\w/.-])(?:[a-z_][\w-]*/)+[\w-]+\.(?:py|md|sh|npz)\b")
RUN_OUTPUTS = {"summary.md"}  # written into every run folder, not part of the repository


def documents() -> dict[str, str]:
    """The README and every source file, by path relative to the repository."""
    files = [ROOT / "README.md", *sorted((ROOT / "src" / "medsyn").rglob("*.py"))]
    return {str(f.relative_to(ROOT)): f.read_text(encoding="utf-8") for f in files}


def _alternatives(path: str) -> list[str]:
    """`a_{x,y}_b` -> [`a_x_b`, `a_y_b`]: the shorthand the comments use for a pair of files."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for option in match[1].split(",") for p in _alternatives(path.replace(match[0], option, 1))]


def missing_results(text: str) -> list[str]:
    """The results paths named in `text` (globs and {a,b} included) that match no file."""
    return [path for cited in CITED_RESULTS.findall(text) for path in _alternatives(cited)
            if not list(ROOT.glob(path))]


def test_every_results_file_the_docs_name_exists():
    missing = {name: missing_results(text) for name, text in documents().items()}
    assert not {name: paths for name, paths in missing.items() if paths}
    assert len(CITED_RESULTS.findall(documents()["README.md"])) >= 5  # the README does cite its numbers' files


def test_a_results_file_that_is_not_there_is_found():
    text = ("measured in `benchmarks/results/quick_seeds0-3_2026-11-30.json`, "
            "`benchmarks/results/plan_accuracy_*.json` and benchmarks/results/no_such_run_2026-11-30.json")
    assert missing_results(text) == ["benchmarks/results/no_such_run_2026-11-30.json"]
    assert missing_results("benchmarks/results/plan_accuracy_{bundled-quick,nowhere}_2026-11-30.json") == \
        ["benchmarks/results/plan_accuracy_nowhere_2026-11-30.json"]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_carries_the_reference_speed(path):
    reference = json.loads(path.read_text(encoding="utf-8")).get("reference_speed")
    assert isinstance(reference, dict), f"{path.name} has no reference_speed"
    values = [reference.get(field, "absent") for field in common.REFERENCE_FIELDS]
    assert all(v is None or (isinstance(v, (int, float)) and v > 0) for v in values), (path.name, reference)
    if None in values:  # not measured with it: the file says why
        assert reference.get("note"), path.name


def test_write_results_records_the_machine_and_its_reference_speed(tmp_path):
    import torch

    reference = {"cgan_steps_per_s": 3.1, "classify_images_per_s": 712.0}
    path = common.write_results("example_2026-11-30", {"rows": [{"x": 1}]}, note="shared machine", folder=tmp_path,
                                reference=reference)
    written = json.loads(path.read_text())
    assert path == tmp_path / "example_2026-11-30.json"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temporary file left
    assert list(written)[:len(common.HEADER_FIELDS)] == list(common.HEADER_FIELDS)
    assert written["benchmark"] == "example_2026-11-30" and written["note"] == "shared machine"
    assert written["reference_speed"] == reference and written["rows"] == [{"x": 1}]
    assert written["threads"]["torch"] == torch.get_num_threads()
    assert written["torch"] == torch.__version__ and written["machine"]["cores"] >= 1


def test_write_results_refuses_a_payload_that_would_hide_its_own_fields(tmp_path):
    with pytest.raises(ValueError, match="reference_speed"):
        common.write_results("bad", {"reference_speed": 99.0}, folder=tmp_path,
                             reference={"cgan_steps_per_s": 3.1, "classify_images_per_s": 712.0})
    assert not list(tmp_path.iterdir())


def test_the_docs_name_only_presets_that_exist():
    named = {name for text in documents().values()
             for group in re.findall(r"--preset[ =]([a-z|]+)", text) for name in group.split("|")}
    named |= {name for text in documents().values() for name in re.findall(r"`(\w+)` preset", text)}
    assert named and named <= set(PRESETS), named - set(PRESETS)


def test_the_readme_names_only_arms_that_parse():
    readme = documents()["README.md"]
    arms = set(re.findall(r"`((?:real|synth)(?:@[\d.]+)?(?:\+[a-z-]+(?:@[\d.]+)?)*)`", readme))
    assert "real+heldout@1" in arms
    for arm in sorted(arms):
        parse_arm(arm)  # a MedsynError names an arm that does not exist


def test_the_docs_name_only_files_that_exist():
    missing = set()
    for text in documents().values():
        missing |= {p for p in REPO_PATH.findall(text) if not (ROOT / p).exists()
                    and not (ROOT / "src" / "medsyn" / p).exists()}
        missing |= {name for name in re.findall(r"[\w-]+\.md\b", text)
                    if name not in RUN_OUTPUTS and not list(ROOT.rglob(name))}
    assert not missing
