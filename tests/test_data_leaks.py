"""The leak guard on real chest X-rays: a folder whose val and test splits hold resized, RGB re-saved copies of its
train images is refused (with counts and example pairs), and `--resplit` and `--allow-leak` get past it; the
official chest_xray_224 splits raise no false alarm."""

from __future__ import annotations

import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import CHEST_XRAY_224
from medsyn import data
from medsyn.cli import main
from medsyn.config import DataConfig
from medsyn.data import leaks, nearcopy
from medsyn.data.splits import patient_from_filename
from medsyn.errors import MedsynError

pytestmark = pytest.mark.skipif(not CHEST_XRAY_224.is_dir(), reason="needs ../shared/data/chest_xray_224")

N_VAL_COPIES, N_TEST_COPIES = 20, 40


def resaved_copy(source, target) -> None:
    """The image resized to 180x150 and back up to 200x200 (aspect changed, then a new size), saved as an RGB JPEG
    at another quality: byte-different, pixel-different and of another size than its original."""
    image = Image.open(source).convert("L").resize((180, 150), Image.Resampling.BILINEAR)
    image = image.resize((200, 200), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    target.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """300 official train images in train/; val/ = the 16 official val images + 20 copies of train images; test/ =
    100 official test images + 40 copies of train images (named copyN, so file-name patient ids do not link them)."""
    root = tmp_path_factory.mktemp("leaky")
    rng = np.random.default_rng(0)
    copies = {}
    for cls in ("NORMAL", "PNEUMONIA"):
        train = sorted((CHEST_XRAY_224 / "train" / cls).iterdir())
        chosen = [train[i] for i in rng.choice(len(train), 150, replace=False)]
        for split in ("train", "val", "test"):
            (root / split / cls).mkdir(parents=True)
        for path in chosen:
            shutil.copy(path, root / "train" / cls / path.name)
        for path in sorted((CHEST_XRAY_224 / "val" / cls).iterdir()):
            shutil.copy(path, root / "val" / cls / path.name)
        test = sorted((CHEST_XRAY_224 / "test" / cls).iterdir())
        for i in rng.choice(len(test), 50, replace=False):
            shutil.copy(test[i], root / "test" / cls / test[i].name)
        n_val, n_test = N_VAL_COPIES // 2, N_TEST_COPIES // 2
        for n, path in enumerate(chosen[:n_val + n_test]):
            split = "val" if n < n_val else "test"
            target = root / split / cls / f"copy{n}.jpeg"
            resaved_copy(path, target)
            copies[str(target)] = str(root / "train" / cls / path.name)
    return root, copies


@pytest.mark.slow
def test_resized_rgb_copies_across_splits_are_an_error_with_counts_and_examples(leaky, capsys):
    root, copies = leaky
    with pytest.raises(MedsynError) as caught:
        data.load(root, DataConfig(size=32))
    message = str(caught.value)
    assert f"{N_VAL_COPIES + N_TEST_COPIES} image(s) of a held-out split are near-copies" in message
    assert f"train and val: {N_VAL_COPIES}" in message and f"train and test: {N_TEST_COPIES}" in message
    assert "--resplit" in message and "--allow-leak" in message
    example = next(line for line in message.splitlines() if "  ~  " in line)
    original, copy = example.strip().split("  ~  ")
    assert copies[copy.split("  (r =")[0]] == original  # the example pairs a copy with its own original
    # every CLI that reads data refuses it with exit 2 and writes nothing
    assert main(["data", "info", str(root), "--size", "32"]) == 2
    assert "near-copies" in capsys.readouterr().err
    out = root.parent / "prepared.npz"
    assert main(["data", "prepare", str(root), "--size", "32", "--out", str(out)]) == 2 and not out.exists()
    assert main(["run", "--data", str(root), "--size", "28", "--preset", "smoke", "--dry-run"]) == 2
    run_dir = root.parent / "run"
    assert main(["run", "--data", str(root), "--size", "28", "--preset", "smoke", "--out", str(run_dir)]) == 2
    assert not run_dir.exists()


@pytest.mark.slow
def test_allow_leak_continues_and_warns_at_the_top(leaky, capsys):
    root, _ = leaky
    assert main(["data", "info", str(root), "--size", "32", "--allow-leak"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("WARNING: LEAK ALLOWED (--allow-leak): 60 held-out image(s) are near-copies")
    dataset = data.load(root, DataConfig(size=32, leak="allow"))
    summary = data.summarize(dataset)
    assert summary["leak"]["policy"] == "allow" and summary["leak"]["counts"]["train&test"] == N_TEST_COPIES
    assert summary["warnings"][0].startswith("LEAK ALLOWED")
    assert main(["run", "--data", str(root), "--size", "28", "--preset", "smoke", "--dry-run", "--allow-leak"]) == 0
    assert capsys.readouterr().out.startswith("WARNING: LEAK ALLOWED")


@pytest.mark.slow
def test_resplit_keeps_every_copy_with_its_original_and_the_proportions(leaky):
    root, copies = leaky
    config = DataConfig(size=32, leak="resplit", val="given")
    dataset = data.load(root, config)
    where = dict(zip(dataset.paths.tolist(), dataset.split.tolist()))
    assert all(where[copy] == where[original] for copy, original in copies.items())
    record = data.summarize(dataset)["leak"]
    assert record["policy"] == "resplit" and record["resplit"]["moved"] > 0
    assert record["resplit"]["images_in_copy_groups"] >= 2 * (N_VAL_COPIES + N_TEST_COPIES)
    given, new = record["resplit"]["given_counts"], record["resplit"]["new_counts"]
    assert sum(given.values()) == sum(new.values()) == len(dataset)
    assert abs(new["test"] - given["test"]) <= 0.2 * given["test"] and new["val"] > 0
    # no copy crosses the new splits, by the guard itself; and the re-split is seeded
    assert leaks.find_leaks(nearcopy.thumbnails([np.asarray(Image.open(p)) for p in dataset.paths]),
                            dataset.split, dataset.paths)["n_copies"] == 0
    assert (data.load(root, config).split == dataset.split).all()
    other = data.load(root, DataConfig(size=32, leak="resplit", val="given", split_seed=1))
    assert (other.split != dataset.split).any()
    assert "re-split grouped by content and patient" in " ".join(dataset.notes)


@pytest.mark.slow
def test_official_chest_xray_splits_raise_no_false_alarm():
    dataset = data.load(CHEST_XRAY_224, DataConfig(size=16))
    leak = data.summarize(dataset)["leak"]
    assert leak["policy"] == "none found" and leak["n_copies"] == 0
    assert set(leak["counts"]) == {"train&val", "train&test", "val&test"}
    # the calibration the threshold states: the highest cross-split match of these certainly different images
    assert 0.985 < leak["highest_other_correlation"] < nearcopy.SAME_IMAGE_CORRELATION - 0.001
    # Kaggle's personN ids repeat across its official splits: a warning, said to be possibly not one patient
    warning = next(w for w in data.summarize(dataset)["warnings"] if w.startswith("PATIENT IDS SHARED"))
    ids = {split: {patient_from_filename(f.name) for f in (CHEST_XRAY_224 / split).rglob("*.jpeg")} - {""}
           for split in ("train", "test")}
    assert f"train and test {len(ids['train'] & ids['test'])} " in warning and "may not be unique" in warning


def test_the_report_and_summary_carry_the_data_warnings_at_the_top():
    from medsyn.report.html import _summary_markdown, _warning_banners

    warning = leaks.warning_text({"n_copies": 60, "counts": {"train&val": 20, "train&test": 40}})
    run = SimpleNamespace(data={"source": "x", "warnings": [warning]},
                          results={"n_test": 10, "replicates": [0], "comparisons": [], "arms": {}, "min_effect": 0.01})
    assert _summary_markdown(run).startswith(f"> **WARNING:** {warning}\n")
    assert warning in _warning_banners(run) and _warning_banners(SimpleNamespace(data={"source": "x"})) == ""
    clean = SimpleNamespace(data={"source": "x"}, results=run.results)
    assert _summary_markdown(clean).startswith("# medsyn summary")
    assert json.dumps(run.data)  # data.json carries them as plain strings
