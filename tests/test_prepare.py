"""`fgaseg prepare`: tiny fake raw downloads of each benchmark -> prepared layouts -> `load_benchmark` values."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgaseg_hf.data.benchmarks import load_benchmark
from fgaseg_hf.data.prepare import (
    COCO_UNUSED_IDS,
    PC59_SOURCE_IDS,
    PreparationError,
    ade847_lookup,
    main,
    pascal_context_val_ids,
    prepare,
)


def _image(path: Path, size=(6, 4), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _annotation(dataset) -> np.ndarray:
    return np.asarray(dataset[0]["annotation"]).astype(np.int64)


def test_ade150_from_a_zip_archive(tmp_path):
    raw = np.array([[0, 1, 150], [2, 0, 75]], np.uint8)
    staging = tmp_path / "staging" / "ADEChallengeData2016"
    _image(staging / "images" / "validation" / "ADE_val_00000001.jpg", size=(3, 2))
    _png(staging / "annotations" / "validation" / "ADE_val_00000001.png", raw)
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in staging.rglob("*"):
            handle.write(file, file.relative_to(staging.parent))
    root = tmp_path / "datasets"
    assert main(["ade150", "--root", str(root), "--archive", str(archive), "--no-progress"]) == 0
    dataset, names = load_benchmark("ade150", root)
    assert len(names) == 150 and dataset[0]["id"] == "ADE_val_00000001"
    np.testing.assert_array_equal(_annotation(dataset), [[255, 0, 149], [1, 255, 74]])


def test_ade847_class_ids_and_resize(tmp_path):
    lookup = ade847_lookup()
    ids = json.loads((Path(__file__).resolve().parents[1] / "src/fgaseg_hf/data/benchmark_classes/ade847_ade_ids.json").read_text())
    assert len(ids) == 847 and lookup[2978] == 0 and lookup[ids[846]] == 846 and lookup[1] == 65535
    base = tmp_path / "ADE20K_2021_17_01"
    folder = "ADE20K_2021_17_01/images/ADE/validation/outdoor/street"
    # A small image kept as is, and one with a shorter side above 512 that is shrunk to 512.
    seg_small = np.zeros((2, 3, 3), np.uint8)
    wall, sky = 2978, 2420
    seg_small[0, 0, :2] = (wall // 256 * 10, wall % 256)
    seg_small[1, 2, :2] = (sky // 256 * 10 + 7, sky % 256)  # R's last digit is not part of the class
    _image(tmp_path / folder / "ADE_val_00000001.jpg", size=(3, 2))
    _png(tmp_path / folder / "ADE_val_00000001_seg.png", seg_small)
    seg_large = np.zeros((520, 1040, 3), np.uint8)
    seg_large[:, 520:, :2] = (sky // 256 * 10, sky % 256)
    _image(tmp_path / folder / "ADE_val_00000002.jpg", size=(1040, 520))
    _png(tmp_path / folder / "ADE_val_00000002_seg.png", seg_large)
    _image(tmp_path / folder / "ADE_train_00000009.jpg", size=(3, 2))  # not validation: skipped
    index = {"folder": [folder] * 3, "filename": ["ADE_val_00000001.jpg", "ADE_train_00000009.jpg", "ADE_val_00000002.jpg"]}
    base.mkdir(parents=True, exist_ok=True)
    (base / "index_ade20k.pkl").write_bytes(pickle.dumps(index))
    assert prepare("ade847", tmp_path, progress=False) == 2
    dataset, names = load_benchmark("ade847", tmp_path)
    assert names[0] == "wall" and names[2] == "sky" and dataset["id"] == ["ADE_val_00000001", "ADE_val_00000002"]
    np.testing.assert_array_equal(_annotation(dataset), [[0, 65535, 65535], [65535, 65535, 2]])
    large = np.asarray(dataset[1]["annotation"])
    assert large.dtype == np.uint16 and large.shape == (512, 1024)
    assert (large[:, :512] == 65535).all() and (large[:, 512:] == 2).all()
    assert dataset[1]["image"].size == (1024, 512)


def test_pc59_paints_rle_masks_in_order(tmp_path):
    from pycocotools import mask as mask_utils

    base = tmp_path / "VOCdevkit" / "VOC2010"
    _image(base / "JPEGImages" / "2008_000002.jpg", size=(4, 3))
    _image(base / "JPEGImages" / "2008_000003.jpg", size=(4, 3))  # a train image: no label written

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    first = np.zeros((3, 4), bool)
    first[:, :2] = True
    second = np.zeros((3, 4), bool)
    second[0, 1:] = True
    detail = {
        "images": [{"image_id": 1, "file_name": "2008_000002.jpg", "height": 3, "width": 4, "phase": "val"},
                   {"image_id": 2, "file_name": "2008_000003.jpg", "height": 3, "width": 4, "phase": "train"}],
        "annos_segmentation": [
            {"image_id": 1, "category_id": PC59_SOURCE_IDS[5], "segmentation": rle(first)},
            {"image_id": 1, "category_id": 3, "segmentation": rle(second)},  # not one of the 59: ignored, paints over
        ],
    }
    (base / "trainval_merged.json").write_text(json.dumps(detail))
    assert prepare("pc59", tmp_path, progress=False) == 1
    dataset, _ = load_benchmark("pc59", tmp_path)
    np.testing.assert_array_equal(_annotation(dataset), [[5, 255, 255, 255], [5, 5, 255, 255], [5, 5, 255, 255]])


def test_pc459_from_mat_files_with_a_range_check(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "VOCdevkit" / "VOC2010"
    ids = ["2008_000002", "2008_000007"]
    _image(base / "JPEGImages" / f"{ids[0]}.jpg", size=(3, 2))
    (base / "trainval").mkdir(parents=True)
    savemat(base / "trainval" / f"{ids[0]}.mat", {"LabelMap": np.array([[1, 459, 431], [2, 2, 1]], np.uint16)})
    assert prepare("pc459", tmp_path, progress=False) == 1  # the second id has no .mat file
    dataset, names = load_benchmark("pc459", tmp_path)
    np.testing.assert_array_equal(_annotation(dataset), [[0, 458, 430], [1, 1, 0]])
    assert names[430] == "unknown"
    savemat(base / "trainval" / f"{ids[0]}.mat", {"LabelMap": np.array([[0, 3]], np.uint16)})
    with pytest.raises(PreparationError, match=r"values must lie in 1\.\.459, got 0\.\.3"):
        prepare("pc459", tmp_path, progress=False, overwrite=True)  # replaces its own first output
    assert len(pascal_context_val_ids()) == 5104


def test_voc_writes_both_label_sets(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    _image(base / "JPEGImages" / "2007_000033.jpg", size=(4, 1))
    _png(base / "SegmentationClassAug" / "2007_000033.png", np.array([[0, 1, 20, 255]], np.uint8))
    assert main(["voc20", "voc20b", "--root", str(tmp_path), "--no-progress"]) == 0
    np.testing.assert_array_equal(_annotation(load_benchmark("voc20", tmp_path)[0]), [[255, 0, 19, 255]])
    np.testing.assert_array_equal(_annotation(load_benchmark("voc20b", tmp_path)[0]), [[20, 0, 19, 255]])


def test_coco_stuff_maps_171_used_ids(tmp_path):
    base = tmp_path / "coco-stuff"
    raw = np.array([[0, 11, 12, 181, 255]], np.uint8)
    for split in ("train2017", "val2017"):
        _image(base / "images" / split / "000000000139.jpg", size=(5, 1))
        _png(base / "annotations" / split / "000000000139.png", raw)
    assert prepare("coco", tmp_path, progress=False) == 2
    dataset, names = load_benchmark("coco", tmp_path, split="train")
    # 11 is an unused thing id; 12 becomes 11 (one unused id below it); 181 (wood) is the last class.
    np.testing.assert_array_equal(_annotation(dataset), [[0, 255, 11, 170, 255]])
    assert names[170] == "wood" and 11 in COCO_UNUSED_IDS


def test_missing_raw_files_are_named(tmp_path, capsys):
    assert main(["ade150", "--root", str(tmp_path), "--no-progress"]) == 2
    assert "ADE20K-150 raw annotations folder not found" in capsys.readouterr().err
    bad = tmp_path / "not-an-archive.zip"
    bad.write_text("hello")
    assert main(["voc20", "--root", str(tmp_path), "--archive", str(bad)]) == 2
    assert "not a zip or tar archive" in capsys.readouterr().err
