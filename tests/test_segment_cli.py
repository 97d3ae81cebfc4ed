"""`fgaseg segment`: outputs, pictures, JSON, unusual images and one-line errors without partial outputs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, tiny_processor
from PIL import Image

from fgaseg_hf import FGASegModel, FGASegProcessor
from fgaseg_hf.cli import main

NAMES = ["sky", "road", "car"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("segment-model")
    model = make_model(seed=2)
    processor = tiny_processor(model.config)
    model.set_default_vocabulary(["tree", "road"], processor.tokenize_vocabulary(["tree", "road"])["input_ids"])
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Unusual but valid images: EXIF-rotated JPEG, palette, 16-bit, grayscale, CMYK, 1x1 and large."""
    path = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(path / "rotated.jpg", exif=exif)
    Image.fromarray(rgb).quantize(colors=8).save(path / "palette.png")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(path / "deep.png")
    Image.fromarray(rgb[:, :, 1]).save(path / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(path / "cmyk.jpg")
    Image.fromarray(rgb[:1, :1]).save(path / "dot.png")
    Image.fromarray(rng.integers(0, 256, (1500, 2100, 3), dtype=np.uint8)).save(path / "large.png")
    return path


def run(capsys, *argv):
    code = main(["segment", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_map(folder, image: Image.Image, names) -> np.ndarray:
    model, processor = FGASegModel.from_pretrained(folder).eval(), FGASegProcessor.from_pretrained(folder)
    with torch.no_grad():
        out = model(**processor(images=image, text=names))
    return processor.post_process_semantic_segmentation(out, target_sizes=[(image.height, image.width)])[0].numpy()


def test_writes_label_and_overlay_pngs_and_json(folder, images, tmp_path, capsys):
    files = sorted(images.glob("*"))
    code, out, err = run(capsys, *files, "--labels", "sky, road ,car", "--model", folder, "--output", tmp_path, "--json")
    assert code == 0, err
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(f) for f in files]
    for file, record in zip(files, records):
        with Image.open(file) as handle:
            from PIL import ImageOps

            upright = ImageOps.exif_transpose(handle)  # the processor converts the mode itself
        labels = np.asarray(Image.open(record["labels_png"]))
        overlay = Image.open(record["overlay_png"])
        assert overlay.size == upright.size and labels.shape == (upright.height, upright.width)
        assert np.array_equal(labels, expected_map(folder, upright, NAMES))
        legend = json.loads(overlay.text["legend"])
        assert sorted(entry["name"] for entry in legend) == sorted(NAMES[i] for i in np.unique(labels))
        fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
        assert [record["classes"][n] for n in NAMES] == pytest.approx(fractions.tolist(), abs=1e-6)
        assert set(record["scores"]) == {NAMES[i] for i in np.unique(labels)}
    assert "segmenting" in err  # progress bar over several images
    # EXIF orientation 6: the stored 60x40 picture is 40 wide and 60 high upright.
    assert Image.open(records[[f.name for f in files].index("rotated.jpg")]["overlay_png"]).size == (40, 60)


def test_default_vocabulary_many_labels_and_console_script(folder, images, tmp_path, capsys):
    code, out, err = run(capsys, images / "grey.png", "--model", folder, "--output", tmp_path / "a", "--json")
    assert code == 0, err and set(json.loads(out)["classes"]) == {"tree", "road"}
    many = ", ".join(f"class{c}" for c in "abcdefghijkl")  # 12 > pad_len 8 and top-k 3
    code, out, err = run(capsys, images / "grey.png", "--labels", many, "--model", folder, "--output", tmp_path / "b", "--json")
    assert code == 0, err
    assert sum(json.loads(out)["classes"].values()) == pytest.approx(1.0)
    result = subprocess.run(
        ["fgaseg", "segment", str(images / "dot.png"), "--labels", "sky;road", "--model", str(folder), "--output",
         str(tmp_path / "c")], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c" / "dot_overlay.png").is_file() and "dot_overlay.png" in result.stdout


def test_sliding_window_and_bfloat16(folder, images, tmp_path, capsys):
    image = Image.open(images / "grey.png")
    code, out, err = run(capsys, images / "grey.png", "--labels", "sky, road, car", "--model", folder, "--output",
                         tmp_path, "--sliding-window", "--json")
    assert code == 0, err
    model, processor = FGASegModel.from_pretrained(folder).eval(), FGASegProcessor.from_pretrained(folder)
    with torch.no_grad():
        outputs = model(**processor(images=image, text=NAMES, do_sliding_window=True))
    expected = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(image.height, image.width)], do_sliding_window=True
    )[0].numpy()
    assert np.array_equal(np.asarray(Image.open(json.loads(out)["labels_png"])), expected)
    code, out, err = run(capsys, images / "grey.png", "--labels", "sky, road, car", "--model", folder, "--output",
                         tmp_path / "bf16", "--dtype", "bfloat16", "--json")
    assert code == 0, err
    assert sum(json.loads(out)["classes"].values()) == pytest.approx(1.0)


def _bad_files(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.zeros((50, 50, 3), np.uint8) + 90).save(good, format="PNG")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "good.png").write_bytes(good.getvalue())
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (tmp_path / "nothing").mkdir()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.png"], "missing.png: no such file"),
        (["text.png"], "text.png: not an image file"),
        (["truncated.png"], "truncated.png: cannot decode the image"),
        (["empty.png"], "empty.png: empty file"),
        (["good.png", "--labels", ""], "label list is empty"),
        (["good.png", "--labels", " , ;, "], "only separators"),
        (["good.png", "--labels", "sky, car, sky"], "duplicate class names: ['sky']"),
        (["good.png", "--model", "{tmp}/clip"], "not an FGA-Seg model"),
        (["good.png", "--model", "{tmp}/nothing"], "not a model folder"),
        (["good.png", "--device", "tpu"], "unknown device 'tpu'"),
        (["good.png", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["good.png", "--dtype", "float16"], "float16 needs a GPU"),
        (["good.png", "text.png"], "text.png: not an image file"),  # nothing written for good.png either
    ],
)
def test_bad_input_gives_one_line_and_no_files(folder, tmp_path, capsys, args, message):
    _bad_files(tmp_path)
    args = [a.format(tmp=tmp_path) if "{tmp}" in a else (str(tmp_path / a) if a.endswith(".png") else a) for a in args]
    if "--labels" not in args:
        args += ["--labels", "sky, road"]
    if "--model" not in args:
        args += ["--model", str(folder)]
    output = tmp_path / "out"
    code, out, err = run(capsys, *args, "--output", output)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not output.exists() or not any(output.iterdir())


def test_missing_model_without_an_embedded_default(tmp_path, capsys, monkeypatch):
    import fgaseg_hf.segment as segment

    monkeypatch.setattr(segment, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code, _, err = run(capsys, tmp_path / "x.png", "--labels", "sky", "--output", tmp_path / "out")
    assert code == 2 and "--model is required" in err and not (tmp_path / "out").exists()


def test_python_api_raises_typed_errors_with_the_same_messages(folder, tmp_path):
    from fgaseg_hf.segment import SegmentError, segment_images

    with pytest.raises(ValueError, match="only separators"):
        segment_images([str(tmp_path / "x.png")], " , ", model=str(folder), output=str(tmp_path))
    with pytest.raises(SegmentError, match="no such file"):
        segment_images([str(tmp_path / "x.png")], "sky", model=str(folder), output=str(tmp_path))
    assert issubclass(SegmentError, ValueError)
    assert sys.modules["fgaseg_hf.segment"].DEVICES == ("cpu", "cuda")


def test_embedded_demo_model_segments_the_example_scene(tmp_path, capsys):
    """No --model, no --labels: the shipped demo model and its seven classes, on the committed example scene whose
    true labels are committed beside it."""
    from fgaseg_hf.data.synthetic import CLASS_NAMES

    repo = Path(__file__).resolve().parents[1]
    example = repo / "examples" / "synthetic_scene.png"
    code, out, err = run(capsys, example, "--output", tmp_path, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert list(record["classes"]) == CLASS_NAMES
    predicted = np.asarray(Image.open(record["labels_png"]))
    truth = np.asarray(Image.open(repo / "examples" / "synthetic_scene_labels.png"))
    assert (predicted == truth).mean() >= 0.85
    assert Image.open(record["overlay_png"]).size == Image.open(example).size
