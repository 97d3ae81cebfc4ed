"""One clear line for every bad input: each command turns a broken file, a bad config or an impossible request
into a single `error:` line naming the file and the problem, with exit code 2 and no traceback; the Python API
raises a typed error with the same message. Wrong values are never silent (NaN / infinite images)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile

import pytest
import torch
import yaml
from conftest import PARITY_FIXTURES, make_model, tiny_processor, tiny_tokenizer
from PIL import Image
from test_modeling_ita import make_ita
from test_training import run_config

from fgaseg_hf import FGASegConfig, ITAProcessor
from fgaseg_hf.cli import main
from fgaseg_hf.configuration_ita import ITAConfig
from fgaseg_hf.data.synthetic import write_synthetic_dataset


def _fails(capsys, argv, *expected) -> str:
    """Runs `fgaseg ARGV`: exit code 2 and exactly one `error:` line holding every `expected` text."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for text in expected:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = make_model()
    fgaseg = root / "fgaseg"
    model.save_pretrained(fgaseg)
    tiny_processor(model.config).save_pretrained(fgaseg)
    ita_model = make_ita()
    ita = root / "ita"
    ita_model.save_pretrained(ita)
    ITAProcessor.from_model_config(ita_model.config, tiny_tokenizer()).save_pretrained(ita)
    image = root / "street.png"
    Image.new("RGB", (20, 16), (90, 120, 200)).save(image)
    return {"fgaseg": fgaseg, "ita": ita, "image": image}


def _variant(tmp_path, source, name, edit):
    folder = tmp_path / name
    shutil.copytree(source, folder)
    edit(folder)
    return folder


def _weights(kind):
    def edit(folder):
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes({"empty": b"", "random": os.urandom(4096), "truncated": data[: len(data) // 2]}[kind])
    return edit


# ----------------------------------------------------------------------------------------- segment
@pytest.mark.parametrize("kind", ["empty", "random", "truncated"])
def test_segment_broken_weights(folders, tmp_path, capsys, kind):
    model = _variant(tmp_path, folders["fgaseg"], kind, _weights(kind))
    _fails(capsys, ["segment", folders["image"], "--labels", "sky", "--model", model, "--output", tmp_path / "out"],
           "cannot load the model", model)
    assert not (tmp_path / "out").exists()


def test_segment_processor_of_the_other_family(folders, tmp_path, capsys):
    def ita_processor(folder):
        for file in folder.iterdir():
            if file.name not in ("config.json", "model.safetensors"):
                file.unlink()
        for file in folders["ita"].iterdir():
            if file.name not in ("config.json", "model.safetensors"):
                shutil.copy(file, folder / file.name)

    model = _variant(tmp_path, folders["fgaseg"], "mixed", ita_processor)
    _fails(capsys, ["segment", folders["image"], "--labels", "sky", "--model", model, "--output", tmp_path / "out"],
           model, "processor files are for another model family", "ITAImageProcessor")


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0), ("window_size", -2), ("image_size", 0)])
def test_segment_config_with_impossible_sizes(folders, tmp_path, capsys, field, value):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config[field] = value
        (folder / "config.json").write_text(json.dumps(config))

    model = _variant(tmp_path, folders["fgaseg"], field, edit)
    _fails(capsys, ["segment", folders["image"], "--labels", "sky", "--model", model, "--output", tmp_path / "out"],
           model, f"FGASegConfig.{field} must be a positive integer, got {value}")


def test_segment_duplicate_labels(folders, tmp_path, capsys):
    _fails(capsys, ["segment", folders["image"], "--labels", "sky, road, sky", "--model", folders["fgaseg"],
                    "--output", tmp_path / "out"], "duplicate class names", "sky")


# ----------------------------------------------------------------------------------------- convert
def _convert(tmp_path, checkpoint, config):
    return ["convert", "--checkpoint", checkpoint, "--config", config, "--output", tmp_path / "converted"]


@pytest.mark.parametrize("content, problem", [
    (b"", "empty (zero bytes)"), (os.urandom(3000), "not a PyTorch checkpoint"), ("truncated", "truncated"),
])
def test_convert_broken_checkpoints(tmp_path, capsys, content, problem):
    checkpoint = tmp_path / "model_final.pth"
    if content == "truncated":
        data = (PARITY_FIXTURES / "fast_cat" / "checkpoint.pth").read_bytes()
        content = data[: len(data) // 3]
    checkpoint.write_bytes(content)
    _fails(capsys, _convert(tmp_path, checkpoint, PARITY_FIXTURES / "fast_cat" / "config.json"), checkpoint, problem)
    assert not (tmp_path / "converted").exists()


def test_convert_invalid_yaml_and_a_looping_base(tmp_path, capsys):
    checkpoint = PARITY_FIXTURES / "fast_cat" / "checkpoint.pth"
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [1, 2\n  SEM_SEG_HEAD: :")
    _fails(capsys, _convert(tmp_path, checkpoint, broken), broken, "not valid YAML")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"_BASE_": "b.yaml", "MODEL": {}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"_BASE_": "a.yaml"}))
    _fails(capsys, _convert(tmp_path, checkpoint, tmp_path / "a.yaml"), "_BASE_ chain loops", "a.yaml -> ", "b.yaml")


def test_convert_null_derived_values_take_the_defaults(tmp_path):
    """A config exported from the no_fast decoder has `derived.fast_eval_select_topk: null`; every null derived
    value counts as absent."""
    from fgaseg_hf.conversion import ORIGINAL_FAST_TOP_K, convert_original_checkpoint

    fixture = PARITY_FIXTURES / "fast_cat"
    config = json.loads((fixture / "config.json").read_text())
    reference = convert_original_checkpoint(str(fixture / "checkpoint.pth"), str(fixture / "config.json")).config
    config["derived"].update(fast_eval_select_topk=None, pad_len=None, p2t_nhead=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    converted = convert_original_checkpoint(str(fixture / "checkpoint.pth"), str(tmp_path / "config.json")).config
    assert converted.inference_top_k == ORIGINAL_FAST_TOP_K
    assert converted.class_aggregation_length == reference.class_aggregation_length
    assert converted.p2t_num_heads == reference.p2t_num_heads and converted.hidden_dim == reference.hidden_dim


# ----------------------------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), 2, 0, (16, 16), progress=False)


def _train(tmp_path, config):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    return ["train", "--config", path]


@pytest.mark.parametrize("suffix, text, problem", [(".yaml", "model: [1,\n", "not valid YAML"),
                                                   (".json", "{model", "not valid JSON")])
def test_train_unreadable_run_config(tmp_path, capsys, suffix, text, problem):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    _fails(capsys, ["train", "--config", path], path, problem)


def test_train_duplicate_class_names(scenes, tmp_path, capsys):
    config = run_config(scenes, tmp_path / "run")
    config["data"]["class_names"] = ["sky", "water", "sky"]
    _fails(capsys, _train(tmp_path, config), "data.class_names", "duplicate class names", "sky")


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0), ("window_size", -4), ("hidden_dim", 0)])
def test_train_impossible_sizes(scenes, tmp_path, capsys, field, value):
    config = run_config(scenes, tmp_path / "run")
    config["model"]["overrides"][field] = value
    _fails(capsys, _train(tmp_path, config), f"FGASegConfig.{field} must be a positive integer, got {value}")


def test_train_empty_dataset(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "metadata.jsonl").write_text("")
    (empty / "class_names.json").write_text('["sky"]')
    _fails(capsys, _train(tmp_path, run_config(empty, tmp_path / "run")), empty, "empty")


@pytest.mark.parametrize("family", ["fgaseg", "ita"])
def test_train_from_a_folder_with_broken_weights(folders, scenes, tmp_path, capsys, family):
    model = _variant(tmp_path, folders[family], "broken", _weights("truncated"))
    config = run_config(scenes, tmp_path / "run")
    config["model"] = {"from_pretrained": str(model), "family": family}
    _fails(capsys, _train(tmp_path, config), "model.from_pretrained", model)


# ----------------------------------------------------------------------------------------- prepare
def test_prepare_corrupt_archives_and_files(tmp_path, capsys):
    root = tmp_path / "datasets"
    archive = tmp_path / "ADE.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        payload = os.urandom(50000)
        info = tarfile.TarInfo("ADEChallengeData2016/blob.bin")
        info.size = len(payload)
        handle.addfile(info, io.BytesIO(payload))
    archive.write_bytes(archive.read_bytes()[:20000])
    _fails(capsys, ["prepare", "ade150", "--root", root, "--archive", archive, "--no-progress"], archive,
           "truncated or corrupt archive")
    not_zip = tmp_path / "ADE.zip"
    with zipfile.ZipFile(not_zip, "w") as handle:
        handle.writestr("a.txt", "x" * 100)
    not_zip.write_bytes(not_zip.read_bytes()[:-40])
    _fails(capsys, ["prepare", "ade150", "--root", root, "--archive", not_zip, "--no-progress"], not_zip)
    labels = root / "ADEChallengeData2016" / "annotations" / "validation"
    labels.mkdir(parents=True)
    (labels / "ADE_val_00000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _fails(capsys, ["prepare", "ade150", "--root", root, "--no-progress"], labels / "ADE_val_00000001.png",
           "cannot read this image")
    pascal = root / "VOCdevkit" / "VOC2010"
    pascal.mkdir(parents=True)
    (pascal / "trainval_merged.json").write_text("{not json")
    _fails(capsys, ["prepare", "pc59", "--root", root, "--no-progress"], pascal / "trainval_merged.json", "JSON")


def test_synthetic_impossible_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["synthetic", "--output", str(tmp_path / "s"), "--size", "0"])
    assert exit_.value.code == 2 and "--size must be positive" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("values, message", [
    (dict(num_attention_heads=0), "FGASegConfig.num_attention_heads must be a positive integer, got 0"),
    (dict(hidden_dim=-32), "FGASegConfig.hidden_dim must be a positive integer, got -32"),
    (dict(window_size=0), "FGASegConfig.window_size"),
    (dict(pooling_size=[2, 0]), "FGASegConfig.pooling_size must be a positive integer in every entry, got [2, 0]"),
    (dict(decoder_dims=[16, -16]), "FGASegConfig.decoder_dims"),
    (dict(image_size=0), "FGASegConfig.image_size"),
    (dict(p2t_num_heads=0), "FGASegConfig.p2t_num_heads"),
    (dict(clip_config=dict(vision_config=dict(patch_size=0))), "FGASegConfig.clip_config.vision_config.patch_size"),
    (dict(clip_config=dict(text_config=dict(num_attention_heads=0))),
     "FGASegConfig.clip_config.text_config.num_attention_heads"),
    (dict(clip_config=dict(vision_config=dict(image_size=-224))), "FGASegConfig.clip_config.vision_config.image_size"),
])
def test_fgaseg_config_refuses_impossible_sizes(values, message):
    with pytest.raises(ValueError) as caught:
        FGASegConfig(**values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("values, message", [
    (dict(num_attention_heads=0), "ITAConfig.num_attention_heads"),
    (dict(hidden_dim=0), "ITAConfig.hidden_dim"),
    (dict(feature_size=-256), "ITAConfig.feature_size"),
    (dict(clip_image_size=0), "ITAConfig.clip_image_size"),
    (dict(common_stride=0), "ITAConfig.common_stride"),
    (dict(size_divisibility=-1), "ITAConfig.size_divisibility must be an integer >= 0"),
    (dict(vision_config=dict(hidden_sizes=[8, 16, 0, 32])), "ITAConfig.vision_config.hidden_sizes"),
    (dict(vision_config=dict(depths=[1, 1, 0, 1])), "ITAConfig.vision_config.depths"),
    (dict(text_config=dict(num_attention_heads=0)), "ITAConfig.text_config.num_attention_heads"),
    (dict(text_config=dict(hidden_size=30, num_attention_heads=4)), "divisible"),
])
def test_ita_config_refuses_impossible_sizes(values, message):
    with pytest.raises(ValueError) as caught:
        ITAConfig(**values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------- NaN inputs
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_fgaseg_forward_refuses_non_finite_pixels(bad):
    model = make_model()
    pixels = torch.zeros(2, 3, 64, 64)
    pixels[1, 2, 5, 7] = bad
    text = torch.randn(3, 1, model.config.projection_dim)
    with pytest.raises(ValueError, match=r"pixel_values holds 1 NaN or infinite value\(s\) of 24576"):
        model(pixel_values=pixels, text_embeds=text)
    assert model(pixel_values=pixels[:1], text_embeds=text).logits.isfinite().all()


@pytest.mark.parametrize("name", ["pixel_values", "clip_pixel_values"])
def test_ita_forward_refuses_non_finite_pixels(name):
    model = make_ita()
    processor = ITAProcessor.from_model_config(model.config, tiny_tokenizer())
    inputs = dict(processor(images=Image.new("RGB", (40, 32)), text=["sky", "road"]))
    inputs["clip_pixel_values"] = torch.zeros(1, 3, model.config.clip_image_size, model.config.clip_image_size)
    inputs[name] = inputs[name].clone()
    inputs[name][0, 0, 1, 1] = float("nan")
    with torch.no_grad(), pytest.raises(ValueError, match=rf"{name} holds 1 NaN or infinite"):
        model(**inputs)


# ----------------------------------------------------------------------------------------- benchmark
@pytest.mark.parametrize("content, problem", [(None, "unknown FGA-Seg preset"), ("{bad", "not valid JSON"),
                                              ('{"model": {"window_size": 0}}', "FGASegConfig.window_size")])
def test_benchmark_bad_presets_fail_before_any_case_runs(tmp_path, capsys, content, problem):
    preset = tmp_path / "preset.json"
    if content is not None:
        preset.write_text(content)
    _fails(capsys, ["benchmark", "--preset", preset, "--output", tmp_path / "bench.json"], preset, problem)
    assert not (tmp_path / "bench.json").exists()


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_model_folder_with_truncated_weights(folders, tmp_path, capsys):
    model = _variant(tmp_path, folders["fgaseg"], "broken", _weights("truncated"))
    data = write_synthetic_dataset(tmp_path / "scenes", 0, 2, (16, 16), progress=False)
    _fails(capsys, ["evaluate", "--model", model, "--data", data / "validation", "--classes", data / "class_names.json",
                    "--output", tmp_path / "eval.json", "--no-progress"], "cannot load the model", model)
    assert not (tmp_path / "eval.json").exists()
