"""What users do with a converted CAT-Seg: `fgaseg segment`, both pipelines, `fgaseg evaluate`, `fgaseg train` (on
CAT-Seg itself, and an FGA-Seg initialised from CAT-Seg's weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import PARITY_FIXTURES
from PIL import Image

from fgaseg_hf.cli import main
from fgaseg_hf.data.synthetic import write_synthetic_dataset
from fgaseg_hf.modeling_catseg import CATSegModel, fgaseg_from_catseg
from fgaseg_hf.modeling_fgaseg import FGASegModel
from fgaseg_hf.processing_fgaseg import FGASegProcessor
from fgaseg_hf.training import build_model, run_training

CATSEG = PARITY_FIXTURES / "catseg_b"
NAMES = ["sky", "tree", "road"]
# A tiny CAT-Seg from the released ViT-B preset (64 px, one-character tokens) for training runs.
TINY_CATSEG = {
    "preset": "catseg_vitb_384",
    "tokenizer": "characters",
    "overrides": {
        "image_size": 64, "hidden_dim": 32, "decoder_dims": [16, 16], "decoder_guidance_dims": [16, 16],
        "decoder_guidance_proj_dims": [8, 8], "text_guidance_dim": 32, "text_guidance_proj_dim": 16,
        "appearance_guidance_dim": 32, "appearance_guidance_proj_dim": 16, "window_size": 4, "pooling_size": [2, 2],
        "num_attention_heads": 2, "guidance_layer_indexes": [1, 2], "class_aggregation_length": 8,
        "clip_config": {
            "projection_dim": 32,
            "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "vocab_size": 83, "max_position_embeddings": 40, "bos_token_id": 81, "eos_token_id": 82,
                            "pad_token_id": 82},
            "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                              "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        },
    },
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The reference fixture's tiny CAT-Seg converted by `fgaseg convert` (CLIP tokenizer, 384 px)."""
    folder = tmp_path_factory.mktemp("catseg") / "model"
    code = main(["convert", "--checkpoint", str(CATSEG / "checkpoint.pth"), "--config", str(CATSEG / "config.json"),
                 "--output", str(folder)])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    y, x = np.mgrid[0:120, 0:160]
    pixels = np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _direct_labels(folder, image, names, sliding_window=False):
    model = CATSegModel.from_pretrained(folder).eval()
    processor = FGASegProcessor.from_pretrained(folder)
    inputs = processor(images=image, text=names, do_sliding_window=sliding_window)
    with torch.no_grad():
        out = model(**inputs)
    return processor.post_process_semantic_segmentation(
        out, target_sizes=[image.size[::-1]], do_sliding_window=sliding_window
    )[0]


def test_segment_command_on_a_converted_catseg(converted, photo, tmp_path, capsys):
    code = main(["segment", str(photo), "--model", str(converted), "--labels", ", ".join(NAMES), "--output",
                 str(tmp_path / "out"), "--json"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out)
    labels = np.asarray(Image.open(record["labels_png"]))
    expected = _direct_labels(converted, Image.open(photo).convert("RGB"), NAMES).numpy()
    assert np.array_equal(labels, expected)
    fractions = {name: float(np.mean(expected == index)) for index, name in enumerate(NAMES)}
    assert record["classes"] == pytest.approx(fractions, abs=1e-6)


@pytest.mark.parametrize("task", ["open-vocabulary-segmentation", "image-segmentation"])
def test_pipelines_on_a_converted_catseg(converted, photo, task):
    from transformers import pipeline

    image = Image.open(photo).convert("RGB")
    expected = _direct_labels(converted, image, NAMES).numpy()
    if task == "image-segmentation":
        # transformers' own pipeline: the model's vocabulary must be set, so give the folder one first.
        model = CATSegModel.from_pretrained(converted)
        processor = FGASegProcessor.from_pretrained(converted)
        model.set_default_vocabulary(NAMES, processor.tokenize_vocabulary(NAMES)["input_ids"])
        segmenter = pipeline(task, model=model, image_processor=processor.image_processor)
        result = segmenter(image, subtask="panoptic")
    else:
        segmenter = pipeline(task, model=str(converted), trust_remote_code=True)
        result = segmenter(image, candidate_labels=NAMES)
    assert result, "no segment"
    for segment in result:
        mask = np.asarray(segment["mask"]) > 0
        assert np.array_equal(mask, expected == NAMES.index(segment["label"])), segment["label"]


@pytest.mark.slow
def test_sliding_window_pipeline_on_a_converted_catseg(converted, photo):
    from transformers import pipeline

    image = Image.open(photo).convert("RGB")
    segmenter = pipeline("open-vocabulary-segmentation", model=str(converted), trust_remote_code=True)
    assert segmenter.image_processor.crop_size == 384
    result = segmenter(image, candidate_labels=NAMES, sliding_window=True)
    expected = _direct_labels(converted, image, NAMES, sliding_window=True).numpy()
    for segment in result:
        assert np.array_equal(np.asarray(segment["mask"]) > 0, expected == NAMES.index(segment["label"]))


def test_evaluate_command_on_a_catseg(tmp_path, capsys):
    from conftest import tiny_config, tiny_processor

    from fgaseg_hf.configuration_catseg import CATSEG_SWITCHES, CATSegConfig
    from fgaseg_hf.data.benchmarks import BENCHMARKS
    from fgaseg_hf.evaluation import main as evaluate_main

    # A tiny CAT-Seg (64 px, 96 px canvas: its crops fall back to the model's resolution) keeps 150 classes fast.
    values = {k: v for k, v in tiny_config().to_dict().items() if k not in ("model_type", "transformers_version")}
    torch.manual_seed(0)
    model = CATSegModel(CATSegConfig(**{**values, **CATSEG_SWITCHES, "class_aggregation_length": 0}))
    folder = tmp_path / "tiny-catseg"
    model.save_pretrained(folder)
    tiny_processor(model.config, sliding_window_canvas=[96, 96]).save_pretrained(folder)

    root = tmp_path / "datasets"
    spec = BENCHMARKS["ade150"]
    rng = np.random.default_rng(0)
    for index in range(2):
        image_path = root / spec.image_dirs["validation"] / f"ADE_val_{index:08d}.jpg"
        label_path = root / spec.label_dirs["validation"] / f"ADE_val_{index:08d}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image_path)
        Image.fromarray(rng.choice([0, 1, 3, 255], size=(30, 40)).astype(np.uint8)).save(label_path)
    output = tmp_path / "eval.json"
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(root), "--output",
                          str(output), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    entry = report["results"]["ade150"]
    assert 0.0 <= entry["mIoU"] <= 1.0
    # CAT-Seg's published protocol is FGA-Seg's: the sliding window (here on the tiny canvas), pooling 1 x 1.
    assert report["protocol"]["sliding_window"] is True and report["protocol"]["sliding_window_crop_size"] == 64
    assert report["protocol"]["pooling_size"] == [1, 1]


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), 8, 4, size=(72, 72), seed=0, progress=False)


def _run_config(scenes, output, model_block, steps=2):
    return {
        "model": json.loads(json.dumps(model_block)),
        "data": {"path": str(scenes)},
        "augmentation": {"min_sizes": [64], "color_jitter": False, "flip": False},
        "training": {
            "output_dir": str(output), "max_steps": steps, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
            "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no", "report_to": "none", "seed": 0,
            "disable_tqdm": True, "use_cpu": True,
        },
    }


@pytest.fixture(scope="module")
def trained_catseg(scenes, tmp_path_factory):
    output = tmp_path_factory.mktemp("catseg-run")
    run_training(_run_config(scenes, output, TINY_CATSEG))
    return output


def test_train_catseg(trained_catseg):
    config = json.loads((trained_catseg / "config.json").read_text())
    assert config["model_type"] == "catseg" and config["architectures"] == ["CATSegModel"]
    history = json.loads((trained_catseg / "training_history.json").read_text())["log_history"]
    assert all(np.isfinite(entry["loss"]) for entry in history if "loss" in entry)
    model = CATSegModel.from_pretrained(trained_catseg)
    assert model.pixel_text_attention is None and model.alignment_projector is None


def test_fgaseg_starts_from_catseg_weights(trained_catseg, scenes, tmp_path):
    catseg = CATSegModel.from_pretrained(trained_catseg)
    names = json.loads((scenes / "class_names.json").read_text())
    model, _ = build_model({"family": "fgaseg", "from_pretrained": str(trained_catseg)}, names)
    assert type(model) is FGASegModel and model.config.model_type == "fgaseg"
    source, target = catseg.state_dict(), model.state_dict()
    shared = [name for name in source if not name.startswith("default_")]
    assert shared and all(name in target for name in shared)
    for name in shared:
        assert torch.equal(source[name], target[name]), name
    new = [name for name in target if name not in source]
    for prefix in ("pixel_text_attention.", "alignment_projector.", "decoder.local_alignment.", "decoder.local_embed.",
                   "decoder.fuse_embed.", "decoder.aux_head0."):
        assert any(name.startswith(prefix) for name in new), prefix
    assert model.config.decoder_mode == "fast"
    _, report = fgaseg_from_catseg(catseg)
    assert set(report["copied"]) == set(source) and set(report["initialised"]) == set(new)
    # `fgaseg train` runs from there and saves an FGA-Seg.
    output = tmp_path / "fgaseg-run"
    run_training(_run_config(scenes, output, {"family": "fgaseg", "from_pretrained": str(trained_catseg)}, steps=1))
    assert json.loads((output / "config.json").read_text())["model_type"] == "fgaseg"
