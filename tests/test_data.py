"""The data stage on real data: the bundled PneumoniaMNIST, real Kaggle chest X-rays, DICOM written from them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CHEST_XRAY_3CLASS, CHEST_XRAY_SMALL, DICOM_DIR, DICOM_REFERENCE, npz_with_damaged_member
from medsyn import data
from medsyn.cli import main
from medsyn.config import DataConfig
from medsyn.data import loader as load_module
from medsyn.data.images import load_image
from medsyn.data.splits import patient_from_filename


@pytest.mark.slow
def test_bundled_counts_and_class_names(bundled):
    assert bundled.class_names == ("normal", "pneumonia")
    assert bundled.counts() == {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}
    assert bundled.images.shape == (5856, 28, 28, 1) and bundled.images.dtype == np.uint8


@pytest.mark.slow
def test_bundled_train_val_duplicates_are_found(bundled):
    groups = data.duplicate_groups(bundled)
    across = [g for g in groups if {"train", "val"} <= {bundled.split[i] for i in g}]
    assert len(across) == 8
    for group in across:
        assert all(np.array_equal(bundled.images[group[0]], bundled.images[i]) for i in group)
    assert data.summarize(bundled)["duplicates"]["groups_across_splits"] == 8


def test_kaggle_folder_counts_class_map_and_grouped_val():
    dataset = data.load(CHEST_XRAY_SMALL, DataConfig(size=64, val="carve"))
    assert dataset.class_names == ("NORMAL", "PNEUMONIA")
    assert dataset.counts(given=True) == {"train": [14, 21], "val": [2, 2], "test": [8, 12]}
    assert dataset.images.shape == (59, 64, 64, 1)
    counts = dataset.counts()
    assert counts["test"] == [8, 12]                        # the test split is never re-drawn
    assert (dataset.split[dataset.given_split == "val"] != "val").any()   # the given val joined the pool
    assert all(c > 0 for c in counts["val"])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = set(dataset.groups[dataset.split == a]) & set(dataset.groups[dataset.split == b])
        assert not shared, f"patients {shared} in both {a} and {b}"
    assert (dataset.groups != "").all()


def test_split_assignment_is_saved_and_seeded():
    config = DataConfig(size=32, split_seed=3)
    first = data.load(CHEST_XRAY_SMALL, config)
    saved = list(data.cache_entry(CHEST_XRAY_SMALL, config).glob("splits-*seed3.csv"))
    assert len(saved) == 1
    rows = saved[0].read_text().splitlines()
    assert rows[0] == "path,label,class,split,patient_id" and len(rows) == 60
    again = data.load(CHEST_XRAY_SMALL, config)
    assert (first.split == again.split).all()


def test_patient_ids_from_kaggle_names():
    assert patient_from_filename("person123_bacteria_456.jpeg") == "person123"
    assert patient_from_filename("person7_virus_13.jpeg") == "person7"
    assert patient_from_filename("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_from_filename("NORMAL2-IM-0115-0001.jpeg") == "IM-0115"
    assert patient_from_filename("scan.png") == ""


def test_three_classes_from_manifest():
    dataset = data.load(CHEST_XRAY_3CLASS, DataConfig(size=32))
    assert dataset.class_names == ("BACTERIA", "NORMAL", "VIRUS")
    assert dataset.counts(given=True)["test"] == [8, 8, 4]
    assert set(np.unique(dataset.labels)) == {0, 1, 2}
    assert all(c > 0 for c in dataset.counts()["val"])      # val carved because the given one lacked VIRUS


def test_dicom_decoding_matches_the_source_pixels():
    for path in sorted(DICOM_DIR.rglob("*.dcm")):
        decoded = load_image(path).astype(float)
        reference = np.asarray(Image.open(DICOM_REFERENCE / f"{path.stem}.png")).astype(float)
        # The rescale and window are linear, so decoding must give back the source up to the min-max stretch;
        # MONOCHROME1 files would correlate at -1 if they were not inverted.
        assert np.corrcoef(decoded.ravel(), reference.ravel())[0, 1] > 0.999, path.name
    import pydicom

    kinds = {pydicom.dcmread(p, stop_before_pixels=True).PhotometricInterpretation for p in DICOM_DIR.rglob("*.dcm")}
    assert kinds == {"MONOCHROME1", "MONOCHROME2"}


def test_dicom_folder_loads_as_a_dataset():
    dataset = data.load(DICOM_DIR)
    assert len(dataset) == 8 and dataset.size == 128 and dataset.channels == 1


def test_second_load_decodes_nothing(monkeypatch):
    calls = []
    real = load_module.load_image
    monkeypatch.setattr(load_module, "load_image", lambda p: calls.append(p) or real(p))
    data.load(CHEST_XRAY_SMALL, DataConfig(size=40))
    assert len(calls) == 59
    data.load(CHEST_XRAY_SMALL, DataConfig(size=40))
    assert len(calls) == 59
    data.load(CHEST_XRAY_SMALL, DataConfig(size=40, aspect="pad"))   # a new policy is a new cache entry
    assert len(calls) == 118


def test_prepare_writes_medmnist_layout_that_loads_back(tmp_path, capsys):
    out = tmp_path / "small.npz"
    assert main(["data", "prepare", str(CHEST_XRAY_SMALL), "--size", "32", "--out", str(out)]) == 0
    with np.load(out) as archive:
        assert archive["train_images"].shape[1:] == (32, 32)
        assert archive["test_labels"].shape == (20, 1)
    original, reloaded = data.load(CHEST_XRAY_SMALL, DataConfig(size=32)), data.load(out)
    assert reloaded.class_names == original.class_names
    assert reloaded.counts() == original.counts()
    assert np.array_equal(reloaded.subset("test").images, original.subset("test").images)
    before = out.read_bytes()
    assert main(["data", "prepare", str(CHEST_XRAY_SMALL), "--size", "32", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


def test_info_json_reports_counts_patients_and_cache(capsys):
    assert main(["data", "info", str(CHEST_XRAY_SMALL), "--size", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["given_counts"]["train"] == [14, 21]
    assert summary["patients"]["known"] and set(summary["patients"]["shared_across_splits"].values()) == {0}
    assert Path(summary["cache"]).is_dir()


def test_mixed_sizes_and_modes_are_handled(tmp_path):
    """RGBA, palette, 16-bit, colour and non-square real X-rays in one folder all become 32x32 grayscale."""
    sources = sorted((CHEST_XRAY_SMALL / "train" / "NORMAL").iterdir())[:4] + \
        sorted((CHEST_XRAY_SMALL / "train" / "PNEUMONIA").iterdir())[:4]
    for i, src in enumerate(sources):
        cls = "NORMAL" if "NORMAL" in str(src) else "PNEUMONIA"
        (tmp_path / cls).mkdir(exist_ok=True)
        gray = Image.open(src).convert("L")
        variants = [gray.convert("RGBA"), gray.convert("P"), gray.resize((300, 200)),
                    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257 + 7)]
        variants[i % 4].save(tmp_path / cls / f"{src.stem}.png")
    (tmp_path / "NORMAL" / "notes.txt").write_text("not an image")
    dataset = data.load(tmp_path, DataConfig(size=32))
    assert dataset.images.shape == (8, 32, 32, 1)
    assert dataset.ignored == 1
    sixteen = load_image(tmp_path / "NORMAL" / f"{sources[3].stem}.png")
    assert sixteen.dtype == np.uint8 and np.corrcoef(sixteen.ravel(), np.asarray(
        Image.open(sources[3]).convert("L")).ravel())[0, 1] > 0.999


# ---------------------------------------------------------------- bad input: exit 2, a specific message

def _make_class_folders(root: Path, classes=("A", "B"), n=3) -> None:
    xray = sorted((CHEST_XRAY_SMALL / "train" / "NORMAL").iterdir())
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shutil.copyfile(xray[i], root / c / f"{c}{i}.jpeg")


def _fails(args, capsys, *expected):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err


def test_missing_path(tmp_path, capsys):
    _fails(["data", "info", str(tmp_path / "nope")], capsys, "no such file or folder")


def test_empty_folder(tmp_path, capsys):
    _fails(["data", "info", str(tmp_path)], capsys, "no class or split folders")


def test_class_folder_without_images(tmp_path, capsys):
    _make_class_folders(tmp_path)
    (tmp_path / "C").mkdir()
    (tmp_path / "C" / "readme.txt").write_text("x")
    _fails(["data", "info", str(tmp_path)], capsys, "C: class folder holds no images")


def test_only_one_class(tmp_path, capsys):
    _make_class_folders(tmp_path, classes=("A",))
    _fails(["data", "info", str(tmp_path)], capsys, "at least two classes")


def test_unknown_split_folder(tmp_path, capsys):
    _make_class_folders(tmp_path / "train")
    _make_class_folders(tmp_path / "testing")
    _fails(["data", "info", str(tmp_path)], capsys, "unknown split folder(s) testing")


def test_truncated_images_fail_then_skip(tmp_path, capsys):
    _make_class_folders(tmp_path, n=6)
    for name in ("A/A0.jpeg", "B/B1.jpeg"):
        raw = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(raw[: len(raw) // 3])
    (tmp_path / "B" / "fake.png").write_text("this is text, not a PNG")
    _fails(["data", "info", str(tmp_path), "--size", "32"], capsys, "3 image(s) cannot be used", "A0.jpeg",
           "B1.jpeg", "fake.png", "--skip-bad")
    dataset = data.load(tmp_path, DataConfig(size=32, skip_bad=True))
    assert len(dataset) == 10 and len(dataset.skipped) == 3


def test_decompression_bomb_is_refused(tmp_path, capsys):
    _make_class_folders(tmp_path, n=5)
    Image.new("L", (9000, 9000)).save(tmp_path / "A" / "bomb.png")   # 81 Mpx of zeros: a tiny file
    assert (tmp_path / "A" / "bomb.png").stat().st_size < 1_000_000
    _fails(["data", "info", str(tmp_path), "--size", "32"], capsys, "bomb.png", "decompression bomb")


def _npz(path: Path, **overrides) -> Path:
    arrays = {f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array([[0], [1], [0], [1]], np.uint8) for s in ("train", "val", "test")})
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_npz_missing_keys(tmp_path, capsys):
    _fails(["data", "info", str(_npz(tmp_path / "x.npz", val_labels=None))], capsys, "missing key(s) val_labels")


def test_npz_length_mismatch(tmp_path, capsys):
    path = _npz(tmp_path / "x.npz", test_labels=np.zeros((3, 1), np.uint8))
    _fails(["data", "info", str(path)], capsys, "test_images has 4 rows but test_labels has 3")


def test_npz_labels_out_of_range(tmp_path, capsys):
    path = _npz(tmp_path / "x.npz", class_names=np.array(["a", "b"]), train_labels=np.array([[0], [1], [5], [1]]))
    _fails(["data", "info", str(path)], capsys, "outside [0, 2)")


def test_not_an_npz(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("hello")
    _fails(["data", "info", str(tmp_path / "x.npz")], capsys, "not a readable .npz")


def test_manifest_errors(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    _fails(["data", "info", str(tmp_path / "m.csv")], capsys, "columns path,label")
    (tmp_path / "m.csv").write_text("path,label\nmissing.png,x\nother.png,y\n")
    _fails(["data", "info", str(tmp_path / "m.csv")], capsys, "2 listed file(s) do not exist")


def test_unknown_medmnist_flag(tmp_path, capsys):
    _fails(["data", "download", "notamnist", "--root", str(tmp_path)], capsys, "unknown MedMNIST dataset")
    assert not any(tmp_path.iterdir())


def test_cli_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "medsyn", "data", "info", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("medsyn: error:") and "Traceback" not in result.stderr


def test_an_npz_with_a_damaged_member_is_refused_with_the_fix(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 255, (40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 2
    path = npz_with_damaged_member(tmp_path / "d.npz", train_images=images, train_labels=labels, val_images=images[:0],
                                val_labels=labels[:0], test_images=images[:0], test_labels=labels[:0])
    _fails(["data", "info", str(path)], capsys, "train_images cannot be read (BadZipFile")
