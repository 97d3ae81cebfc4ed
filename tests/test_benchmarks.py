"""Tests for the benchmark loaders: tiny fake copies of each prepared layout, raw ADE, a local parquet set."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fgaseg_hf.data.benchmarks import (
    ADE20K_RAW_SPEC,
    BENCHMARKS,
    class_names,
    fold_predictions,
    load_ade20k_raw,
    load_benchmark,
    load_parquet_or_hub,
    prompt_class_names,
    scored_class_names,
    to_class_ids,
)

# Stored label values per benchmark: valid ids near both ends of the range plus the disk ignore value.
STORED_VALUES = {
    "ade150": [0, 149, 255],
    "ade847": [0, 846, 65535],
    "pc59": [0, 58, 255],
    "pc459": [0, 430, 458],
    "voc20": [0, 19, 255],
    "voc20b": [0, 20, 255],
    "coco": [0, 170, 255],
}


def _write_image(path: Path, seed: int, size: tuple[int, int] = (6, 4)) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=100)
    return pixels


def _label_array(values: list[int], seed: int, dtype: type, size: tuple[int, int] = (6, 4)) -> np.ndarray:
    label = np.array(values, dtype=dtype)[np.arange(size[0] * size[1]) % len(values)].reshape(size[1], size[0])
    return np.roll(label, seed, axis=1)


def _write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label)
    # Single-channel 8-bit PNG or 16-bit TIFF, as the preparation scripts write them.
    assert image.mode == ("I;16" if label.dtype == np.uint16 else "L")
    image.save(path)


def _make_layout(root: Path, key: str, stems: list[str], extra_images: list[str] = ()) -> dict[str, np.ndarray]:
    spec = BENCHMARKS[key]
    dtype = np.uint16 if spec.label_format == "tiff-uint16" else np.uint8
    labels = {}
    for i, stem in enumerate(stems):
        _write_image(root / spec.image_dirs["validation"] / f"{stem}{spec.image_suffix}", seed=i)
        labels[stem] = _label_array(STORED_VALUES[key], i, dtype)
        _write_label(root / spec.label_dirs["validation"] / f"{stem}{spec.label_suffix}", labels[stem])
    for j, stem in enumerate(extra_images):
        _write_image(root / spec.image_dirs["validation"] / f"{stem}{spec.image_suffix}", seed=100 + j)
    return labels


@pytest.mark.parametrize("key", sorted(BENCHMARKS))
def test_load_benchmark_pairs_and_values(tmp_path: Path, key: str) -> None:
    spec = BENCHMARKS[key]
    # VOC/PC image folders hold many images without labels; ADE/COCO pair one to one.
    extra = [] if spec.images_must_have_labels else ["2008_999999"]
    # Stems are written out of order to check pairing by name, not by position.
    labels = _make_layout(tmp_path, key, ["2008_000003", "2008_000001", "2008_000002"], extra)
    dataset, names = load_benchmark(key, tmp_path)

    assert dataset.column_names == ["id", "image", "annotation"]
    assert isinstance(dataset.features["image"], datasets.Image)
    assert isinstance(dataset.features["annotation"], datasets.Image)
    assert dataset["id"] == ["2008_000001", "2008_000002", "2008_000003"]
    assert len(names) == spec.num_prompts
    for row in dataset:
        stored = np.array(row["annotation"])
        expected = labels[row["id"]]
        assert stored.dtype == expected.dtype
        np.testing.assert_array_equal(stored, expected)
        assert row["image"].size == (6, 4)
        assert Path(row["image"].filename).stem == row["id"]

        ids = to_class_ids(row["annotation"], key)
        assert ids.dtype == np.int64
        valid = stored.astype(np.int64) < spec.num_classes
        np.testing.assert_array_equal(ids[valid], stored[valid])
        assert (ids[~valid] == spec.ignore_index).all()
        assert ids.max() <= max(spec.num_classes - 1, spec.ignore_index)


def test_label_values_after_mapping(tmp_path: Path) -> None:
    _make_layout(tmp_path, "ade847", ["a"])
    _make_layout(tmp_path, "pc459", ["b"])
    ade847 = np.unique(to_class_ids(load_benchmark("ade847", tmp_path)[0][0]["annotation"], "ade847"))
    pc459 = np.unique(to_class_ids(load_benchmark("pc459", tmp_path)[0][0]["annotation"], "pc459"))
    assert ade847.tolist() == [0, 846, 65535]
    # Nothing is ignored in PC-459: 430 is "unknown", scored like any class.
    assert pc459.tolist() == [0, 430, 458]
    assert class_names("pc459")[430] == "unknown"
    # Values a broken conversion could leave (>= 459) are ignored, not mis-binned.
    assert to_class_ids(np.array([[459, 65535]], dtype=np.uint16), "pc459").tolist() == [[459, 459]]
    # A custom ignore index, e.g. for metrics that want -1.
    assert to_class_ids(np.array([[3, 255]], dtype=np.uint8), "voc20", ignore_index=-1).tolist() == [[3, -1]]


def test_raw_ade20k_layout(tmp_path: Path) -> None:
    raw = tmp_path / "ADEChallengeData2016"
    stored = np.array([[0, 1, 150, 7]], dtype=np.uint8)
    # Image 1 holds every labelled value shifted up by one (151 is out of range).
    shifted_up = np.where(stored > 0, stored + 1, 0).astype(np.uint8)
    for i, (stem, label) in enumerate([("ADE_val_00000002", stored), ("ADE_val_00000001", shifted_up)]):
        _write_image(raw / "images/validation" / f"{stem}.jpg", seed=i, size=(4, 1))
        _write_label(raw / "annotations/validation" / f"{stem}.png", label)
    _write_image(raw / "images/training/ADE_train_00000001.jpg", seed=9, size=(4, 1))
    _write_label(raw / "annotations/training/ADE_train_00000001.png", stored)

    for root in (tmp_path, raw):
        dataset, names = load_ade20k_raw(root)
        assert dataset["id"] == ["ADE_val_00000001", "ADE_val_00000002"]
        assert len(names) == 150 and names[7] == "bed "
        row = dataset[1]
        np.testing.assert_array_equal(np.array(row["annotation"]), stored)
        assert to_class_ids(row["annotation"], ADE20K_RAW_SPEC).tolist() == [[255, 0, 149, 6]]
        shifted = to_class_ids(dataset[0]["annotation"], ADE20K_RAW_SPEC)
        assert shifted.tolist() == [[255, 1, 255, 7]]  # 151 is out of range -> ignore
    train, _ = load_ade20k_raw(tmp_path, split="training")
    assert train["id"] == ["ADE_train_00000001"]


def test_local_parquet_dataset(tmp_path: Path) -> None:
    images = [Image.fromarray(np.full((3, 5, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    labels = [Image.fromarray(np.full((3, 5), i, dtype=np.uint8)) for i in range(3)]
    source = datasets.Dataset.from_dict(
        {"pixel": images, "mask": labels, "name": ["x", "y", "z"]},
        features=datasets.Features(
            {"pixel": datasets.Image(), "mask": datasets.Image(), "name": datasets.Value("string")}
        ),
    )
    folder = tmp_path / "parquet_set"
    (folder / "data").mkdir(parents=True)
    source.to_parquet(folder / "data" / "validation-00000-of-00001.parquet")
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(["a", "b", "c"]))

    dataset, names = load_parquet_or_hub(
        folder, image_column="pixel", label_column="mask", class_names_file=names_file, split="validation",
        cache_dir=tmp_path / "cache",
    )
    assert names == ["a", "b", "c"]
    assert set(dataset.column_names) == {"image", "annotation", "name"}
    assert isinstance(dataset.features["annotation"], datasets.Image)
    assert [int(np.array(row["annotation"])[0, 0]) for row in dataset] == [0, 1, 2]
    assert dataset[2]["image"].size == (5, 3)

    # A single parquet file and a benchmark key for the names work too.
    single, names = load_parquet_or_hub(
        folder / "data" / "validation-00000-of-00001.parquet", "pixel", "mask", "voc20", cache_dir=tmp_path / "cache"
    )
    assert len(single) == 3 and len(names) == 20
    with pytest.raises(ValueError, match="no column 'label'"):
        load_parquet_or_hub(folder, "pixel", "label", cache_dir=tmp_path / "cache")


def test_missing_folder_error(tmp_path: Path) -> None:
    # Not prepared: the folder that is missing and the command that makes it.
    with pytest.raises(ValueError, match=r"ADE20K-847 is not prepared under .*: no image folder "
                       r".*images_detectron2/validation; make it with `fgaseg prepare ade847 --root "):
        load_benchmark("ade847", tmp_path)
    (tmp_path / BENCHMARKS["pc59"].image_dirs["validation"]).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no label folder .*annotations_detectron2/pc59_val; make it with "
                       r"`fgaseg prepare pc59"):
        load_benchmark("pc59", tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark 'ade20k'"):
        load_benchmark("ade20k", tmp_path)
    with pytest.raises(ValueError, match="no prepared split 'train'"):
        load_benchmark("voc20", tmp_path, split="train")


def test_unpaired_files_error(tmp_path: Path) -> None:
    _make_layout(tmp_path, "ade150", ["ADE_val_00000001"], extra_images=["ADE_val_00000002"])
    with pytest.raises(ValueError, match=r"image\(s\) in .*images/validation have no \*\.png label .*ADE_val_00000002"):
        load_benchmark("ade150", tmp_path)

    _make_layout(tmp_path, "voc20", ["2007_000001"])
    (tmp_path / BENCHMARKS["voc20"].image_dirs["validation"] / "2007_000001.jpg").unlink()
    with pytest.raises(ValueError, match=r"label\(s\) in .*detectron2/val have no \*\.jpg image .*2007_000001"):
        load_benchmark("voc20", tmp_path)


def test_class_name_counts() -> None:
    counts = {key: len(class_names(key)) for key in BENCHMARKS}
    assert counts == {"ade150": 150, "ade847": 847, "pc59": 59, "pc459": 459, "voc20": 20, "voc20b": 59, "coco": 171}
    for key, spec in BENCHMARKS.items():
        assert spec.num_prompts == counts[key]
    assert len(scored_class_names("voc20b")) == 21 == BENCHMARKS["voc20b"].num_classes
    assert scored_class_names("voc20b")[:20] == class_names("voc20")
    assert scored_class_names("voc20b")[20] == "background"
    assert fold_predictions(np.array([3, 19, 20, 58]), "voc20b").tolist() == [3, 19, 20, 20]
    assert fold_predictions(np.array([58]), "pc59").tolist() == [58]
    assert "building" in prompt_class_names("ade847") and "building, edifice" in class_names("ade847")
    assert BENCHMARKS["ade150"].protocol.checkpoint == "model_0074999.pth"
    assert BENCHMARKS["pc59"].protocol.prompt_templates == ("A photo of a {} in the scene",)


def test_folder_dataset_layouts_and_class_lists(tmp_path: Path) -> None:
    """A user's folder: image/label folders paired by stem or a metadata.jsonl; class lists as JSON list, id2label
    object or text lines; one line for each problem."""
    from PIL import Image

    from fgaseg_hf.data.benchmarks import load_folder_dataset

    split = tmp_path / "mine" / "val"
    (split / "JPEGImages").mkdir(parents=True)
    (split / "SegmentationClass").mkdir()
    for stem in ("b", "a"):
        Image.new("RGB", (4, 3)).save(split / "JPEGImages" / f"{stem}.jpg")
        Image.fromarray(np.full((3, 4), 1, np.uint8)).save(split / "SegmentationClass" / f"{stem}.png")
    (tmp_path / "mine" / "id2label.json").write_text(json.dumps({"1": "road", "0": "sky"}))
    dataset, names = load_folder_dataset(tmp_path / "mine", split="validation")
    assert names == ["sky", "road"] and dataset["id"] == ["a", "b"]
    assert np.asarray(dataset[0]["annotation"]).tolist() == [[1] * 4] * 3
    (tmp_path / "names.txt").write_text("sky\nroad\ncar\n")
    assert load_folder_dataset(split, class_names_file=tmp_path / "names.txt")[1] == ["sky", "road", "car"]
    (tmp_path / "twice.txt").write_text("sky\nsky\n")
    with pytest.raises(ValueError, match="names 'sky' twice"):
        load_folder_dataset(split, class_names_file=tmp_path / "twice.txt")
    (split / "SegmentationClass" / "c.png").write_bytes(b"")
    with pytest.raises(ValueError, match="label 'c' in .* has no image"):
        load_folder_dataset(split)
    (split / "metadata.jsonl").write_text('{"file_name": "JPEGImages/a.jpg"}\n')
    with pytest.raises(ValueError, match="line 1 needs file_name and annotation_file_name"):
        load_folder_dataset(split)
    with pytest.raises(ValueError, match="no such folder"):
        load_folder_dataset(tmp_path / "nope")
