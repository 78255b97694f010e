"""Unlabelled pools: read from a folder or an .npz without their labels, and refused when they hold a val or test
image (pixel-identical or a near-copy)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import npz_with_damaged_member
from medsyn import data
from medsyn.data.unlabelled import UnlabelledPool, check_no_held_out, load_unlabelled
from medsyn.errors import MedsynError


@pytest.fixture(scope="module")
def small(bundled_slice):
    return data.load(bundled_slice)


def _pool(images) -> UnlabelledPool:
    return UnlabelledPool(np.asarray(images), np.array([f"pool[{i}]" for i in range(len(images))]), "test pool")


def test_an_npz_pool_is_its_images_and_its_labels_are_never_read(small, tmp_path):
    images = small.subset("train").images[:12, ..., 0]
    np.savez(tmp_path / "labelled.npz", train_images=images[:8], train_labels=np.ones(8), val_images=images[8:],
             val_labels=np.zeros(4))
    np.savez(tmp_path / "bare.npz", images=images)
    labelled, bare = (load_unlabelled(tmp_path / name, 28, 1, "center-crop") for name in ("labelled.npz", "bare.npz"))
    assert not hasattr(labelled, "labels") and len(labelled) == 12
    assert sorted(map(bytes, labelled.images)) == sorted(map(bytes, bare.images))   # the same images, in any order
    assert np.array_equal(bare.images[..., 0], images)


def test_a_folder_pool_is_every_image_under_it_at_the_data_size(small, tmp_path):
    images = small.subset("train").images[:5, ..., 0]
    for i, image in enumerate(images):
        folder = tmp_path / "pool" / ("a" if i < 3 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(image, np.ones((2, 2), np.uint8))).save(folder / f"{i}.png")   # 56 px
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    pool = load_unlabelled(tmp_path / "pool", 28, 3, "center-crop")
    assert pool.images.shape == (5, 28, 28, 3) and pool.images.dtype == np.uint8


def test_a_pool_of_train_images_passes_the_check(small):
    check_no_held_out(_pool(small.subset("train").images[:20]), small)


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("copy", ["identical", "shifted-and-mirrored"])
def test_a_pool_holding_a_val_or_test_image_is_refused(small, split, copy):
    held = small.subset(split).images[3]
    planted = held if copy == "identical" else np.roll(held[:, ::-1], 1, axis=1)
    pool = _pool(np.concatenate([small.subset("train").images[:20], planted[None]]))
    with pytest.raises(MedsynError, match=r"holds 1 image\(s\) that are val or test images") as err:
        check_no_held_out(pool, small)
    assert f"pool[20]  ~  {small.subset(split).paths[3]} ({split})" in str(err.value)


def test_a_source_that_is_neither_folder_nor_npz_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(MedsynError, match="give a folder of images, an .npz"):
        load_unlabelled(tmp_path / "x.csv", 28, 1, "center-crop")
    np.savez(tmp_path / "labels_only.npz", train_labels=np.zeros(3))
    with pytest.raises(MedsynError, match="no array named `images`"):
        load_unlabelled(tmp_path / "labels_only.npz", 28, 1, "center-crop")


def test_an_npz_pool_with_a_damaged_member_is_refused_with_the_fix(small, tmp_path):
    images = small.subset("train").images[:40, ..., 0]
    path = npz_with_damaged_member(tmp_path / "pool.npz", images=images)
    with pytest.raises(MedsynError, match=r"--unlabelled .*pool.npz: images cannot be read \(BadZipFile.*numpy.savez"):
        load_unlabelled(path, 28, 1, "center-crop")
    small_member = npz_with_damaged_member(tmp_path / "small.npz", images=images[:4])
    with pytest.raises(MedsynError, match=r"small.npz: images has a damaged header \(BadZipFile"):
        load_unlabelled(small_member, 28, 1, "center-crop")
