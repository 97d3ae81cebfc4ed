"""Tests of the procedural synthetic-scenes dataset (fgaseg_hf.data.synthetic)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgaseg_hf.data.synthetic import (
    CLASS_NAMES,
    generate_scene,
    load_synthetic_dataset,
    main,
    scene_rng,
    write_synthetic_dataset,
)

REPO = Path(__file__).resolve().parents[1]


def _arrays(seed, size=(128, 128)):
    image, label = generate_scene(np.random.default_rng(seed), size)
    return np.asarray(image), label


def test_class_names():
    assert CLASS_NAMES == ["sky", "water", "grass", "sand", "road", "building", "tree"]


def test_generate_scene_is_deterministic():
    image_a, label_a = _arrays(7)
    image_b, label_b = _arrays(7)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
    image_c, label_c = _arrays(8)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(label_a, label_c)


@pytest.mark.parametrize("size", [(128, 128), (64, 96), (80, 48)])
def test_sizes_types_and_label_values(size):
    for seed in range(5):
        image, label = generate_scene(np.random.default_rng(seed), size)
        assert image.mode == "RGB"
        assert image.size == (size[1], size[0])  # PIL sizes are (width, height)
        assert label.shape == size and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= set(range(len(CLASS_NAMES))) | {255}


def test_class_coverage_over_many_scenes():
    counts = np.zeros(256, np.int64)
    classes_per_scene = []
    for i in range(50):
        _, label = generate_scene(scene_rng(0, "train", i))
        counts += np.bincount(label.ravel(), minlength=256)
        classes_per_scene.append(len(np.unique(label)))
    shares = counts[: len(CLASS_NAMES)] / counts[: len(CLASS_NAMES)].sum()
    assert (shares > 0.02).all(), dict(zip(CLASS_NAMES, shares.round(3)))
    assert shares.max() < 0.6, dict(zip(CLASS_NAMES, shares.round(3)))
    assert counts[255] <= 0.02 * counts.sum()
    assert np.median(classes_per_scene) >= 3  # scenes are not single-class


def test_textured_not_flat():
    # Within one class region the image varies (texture, noise), not a flat colour block.
    image, label = _arrays(3)
    for cls in np.unique(label):
        pixels = image[label == cls].astype(np.float32)
        if len(pixels) > 100:
            assert pixels.std(axis=0).mean() > 3.0, CLASS_NAMES[cls]


def test_train_and_validation_streams_differ():
    train = generate_scene(scene_rng(0, "train", 0))
    validation = generate_scene(scene_rng(0, "validation", 0))
    assert not np.array_equal(np.asarray(train[0]), np.asarray(validation[0]))
    other_seed = generate_scene(scene_rng(1, "train", 0))
    assert not np.array_equal(np.asarray(train[0]), np.asarray(other_seed[0]))


def test_write_and_load_round_trip(tmp_path):
    size = (48, 64)
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=4, num_validation=3, size=size, seed=5,
                                   progress=False)
    assert json.loads((root / "class_names.json").read_text()) == CLASS_NAMES
    assert "seed 5" in (root / "README.md").read_text()
    lines = (root / "train" / "metadata.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {"file_name": "images/00001.png", "annotation_file_name": "annotations/00001.png"}

    dataset, names = load_synthetic_dataset(root, cache_dir=tmp_path / "cache")
    assert names == CLASS_NAMES
    assert {split: len(ds) for split, ds in dataset.items()} == {"train": 4, "validation": 3}
    for split, ds in dataset.items():
        assert set(ds.column_names) == {"image", "annotation"}
        for i, example in enumerate(ds):
            image, label = generate_scene(scene_rng(5, split, i), size)
            assert example["image"].mode == "RGB"
            np.testing.assert_array_equal(np.asarray(example["image"]), np.asarray(image))
            np.testing.assert_array_equal(np.asarray(example["annotation"]), label)
    train_images = [np.asarray(x) for x in dataset["train"]["image"]]
    assert not any(np.array_equal(v, t) for v in dataset["validation"]["image"] for t in train_images)


def test_empty_split_loads(tmp_path):
    root = write_synthetic_dataset(tmp_path / "scenes", num_train=0, num_validation=2, size=(32, 32), progress=False)
    dataset, _ = load_synthetic_dataset(root, cache_dir=tmp_path / "cache")
    assert len(dataset["train"]) == 0 and len(dataset["validation"]) == 2
    assert dataset["train"].features == dataset["validation"].features


def test_writing_is_byte_identical_and_removes_stale_files(tmp_path):
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = write_synthetic_dataset(tmp_path / "a", num_train=3, num_validation=2, size=(32, 32), progress=False)
    b = write_synthetic_dataset(tmp_path / "b", num_train=3, num_validation=2, size=(32, 32), progress=False)
    assert files(a) == files(b)
    c = write_synthetic_dataset(tmp_path / "c", num_train=3, num_validation=2, size=(32, 32), seed=1, progress=False)
    assert files(a)["train/images/00000.png"] != files(c)["train/images/00000.png"]
    write_synthetic_dataset(tmp_path / "a", num_train=1, num_validation=1, size=(32, 32), progress=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "a" / "train" / "images").iterdir()) == ["00000.png"]
    assert Image.open(tmp_path / "a" / "train" / "annotations" / "00000.png").mode == "L"


def test_main_rejects_three_sizes(tmp_path):
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path), "--size", "1", "2", "3"])


def test_script_runs(tmp_path):
    out = tmp_path / "scenes"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_synthetic_scenes.py"), "--output", str(out),
         "--train", "2", "--validation", "1", "--size", "32", "--seed", "3", "--no-progress"],
        capture_output=True, text=True, check=True,
    )
    assert str(out) in result.stdout
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["00000.png", "00001.png"]
    assert len((out / "validation" / "metadata.jsonl").read_text().splitlines()) == 1
    annotation = np.asarray(Image.open(out / "validation" / "annotations" / "00000.png"))
    np.testing.assert_array_equal(annotation, generate_scene(scene_rng(3, "validation", 0), (32, 32))[1])
