"""FC-CLIP through everything a user touches, on a tiny random FC-CLIP written as the original's checkpoint and
converted: the saved folder (config, Auto classes, remote code), the preset, the decoder layer, both pipelines,
`fgaseg segment`, `fgaseg evaluate` and fine-tuning from the converted folder."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
import yaml
from conftest import run_without_package
from parity_helpers import original_state_dict
from PIL import Image
from test_evaluation import fake_ade150  # noqa: F401 (a pytest fixture)
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation, AutoProcessor, pipeline

from fgaseg_hf import FCCLIPConfig, FCCLIPModel, ITAConfig, ITAProcessor, available_fcclip_presets
from fgaseg_hf.clip_tokenizer import build_clip_tokenizer
from fgaseg_hf.conversion_ita import convert_original_checkpoint

NAMES = ["sky", "road, street", "car", "tree"]
IMAGE = Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8))
CONTEXT = 16
TINY = dict(
    vision_config=dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_norm_eps=1e-6),
    # Width 64 with one head: open_clip's rule (width / 64 heads), which the converter applies, gives its head count.
    text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, projection_dim=32,
                     max_position_embeddings=CONTEXT, hidden_act="gelu"),
    vision_head_hidden_size=64, feature_size=32, mask_feature_size=32, encoder_layers=1, encoder_feedforward_dim=64,
    num_attention_heads=2, hidden_dim=32, dim_feedforward=64, decoder_layers=3, num_learned_queries=6,
)
# The original's cfg for it (detectron2 names): test resize 48 / 96, panoptic inference on (masks resized first).
CFG = {
    "MODEL": {
        "META_ARCHITECTURE": "FCCLIP",
        "FC_CLIP": {"GEOMETRIC_ENSEMBLE_ALPHA": 0.4, "GEOMETRIC_ENSEMBLE_BETA": 0.8, "ENSEMBLE_ON_VALID_MASK": False},
        "MASK_FORMER": {"TRAIN_NUM_POINTS": 64, "TEST": {"SEMANTIC_ON": True, "PANOPTIC_ON": True}},
    },
    "INPUT": {"MIN_SIZE_TEST": 48, "MAX_SIZE_TEST": 96},
    "DATASETS": {"TRAIN": ["openvocab_coco_2017_train_panoptic_with_sem_seg"]},
}


def random_fcclip(seed: int = 0) -> FCCLIPModel:
    """A tiny FC-CLIP whose random weights give clearly different masks and classes per query."""
    torch.manual_seed(seed)
    model = FCCLIPModel(FCCLIPConfig(**TINY))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_scale" in name:
                param.fill_(0.5)
            elif name.endswith("logit_scale"):
                param.fill_(3.0)
            elif param.dim() > 1 and "embedding" not in name and "query" not in name and "level_embed" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(math.prod(param.shape[1:])))
            elif param.dim() > 1 or "level_embed" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The original's files for the tiny model: `model_final.pth` ({"model": ...}, trainer state beside it) and a
    detectron2 YAML with a `_BASE_` chain."""
    root = tmp_path_factory.mktemp("original")
    reference = random_fcclip()
    torch.save({"model": {**original_state_dict(reference), "criterion.empty_weight": torch.ones(134)},
                "iteration": 368749}, root / "model_final.pth")
    (root / "base.yaml").write_text(yaml.safe_dump({k: v for k, v in CFG.items() if k != "INPUT"}))
    (root / "fcclip.yaml").write_text(yaml.safe_dump({"_BASE_": "base.yaml", "INPUT": CFG["INPUT"]}))
    return root, reference


@pytest.fixture(scope="module")
def folder(original, tmp_path_factory):
    """The converted tiny FC-CLIP saved with its processor and a default vocabulary."""
    root, _ = original
    path = tmp_path_factory.mktemp("tiny-fcclip")
    model = convert_original_checkpoint(str(root / "model_final.pth"), str(root / "fcclip.yaml"),
                                        prompt_templates=["a {}", "the {}"])
    tokenizer = build_clip_tokenizer(CONTEXT)
    model.set_default_vocabulary(NAMES, tokenizer)
    model.save_pretrained(path)
    ITAProcessor.from_model_config(model.config, tokenizer).save_pretrained(path)
    return path


def load(folder):
    return FCCLIPModel.from_pretrained(folder).eval(), ITAProcessor.from_pretrained(folder)


def direct(folder, image, names):
    model, processor = load(folder)
    with torch.no_grad():
        out = model(**processor(images=image, text=names))
    return processor.post_process_semantic_segmentation(out, target_sizes=[(image.height, image.width)])[0]


# ----------------------------------------------------------------------------- configuration and the saved folder
def test_config_switches_the_three_differences_from_ita():
    config = FCCLIPConfig(**TINY)
    assert (config.decoder_self_attention, config.num_text_queries, config.dominant_extra_names) == (True, 0, [])
    assert not config.uses_dominant_categories and ITAConfig(**TINY).uses_dominant_categories
    for bad, message in [
        (dict(num_text_queries=20), "num_text_queries must be 0"),
        (dict(decoder_self_attention=False), "decoder_self_attention must be True"),
        (dict(dominant_extra_names=["other"]), "dominant_extra_names must be empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            FCCLIPConfig(**TINY, **bad)
    model = FCCLIPModel(config)
    assert model.dominant_projection is None and all(hasattr(layer, "self_attn") for layer in model.decoder.layers)
    assert model.decoder.query_embed.num_embeddings == model.decoder.query_feat.num_embeddings == 6
    with pytest.raises(ValueError, match="FCCLIPModel needs an FCCLIPConfig"):
        FCCLIPModel(ITAConfig(**TINY))


def test_preset_is_the_published_convnext_large():
    assert available_fcclip_presets() == ["fcclip_convnext_large"]
    config = FCCLIPConfig.from_preset("fcclip_convnext_large")
    ita = ITAConfig.from_preset("ita_convnext_large_d_320")
    assert (config.num_queries, config.decoder_layers, config.hidden_dim, config.projection_dim) == (250, 10, 256, 768)
    assert (config.geometric_ensemble_alpha, config.geometric_ensemble_beta, config.postprocess_order) == (0.4, 0.8, "before")
    assert (config.min_size_test, config.max_size_test) == (800, 1333)
    assert config.vision_config.hidden_sizes == [192, 384, 768, 1536] and config.vision_config.depths == [3, 3, 27, 3]
    # COCO panoptic's 133 training classes with FC-CLIP's synonyms: one list, kept in the ITA preset.
    assert config.seen_class_names == ita.seen_class_names and len(config.seen_class_names) == 133
    assert config.seen_class_names[0].startswith("person, child, girl")


def test_decoder_layer_is_mask2formers_cross_self_ffn_layer(original):
    """With self-attention the layer is exactly transformers' Mask2Former layer (cross-attention, self-attention,
    FFN, post-norm) given the same weights."""
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerMaskedAttentionDecoderLayer

    from fgaseg_hf.ita_decoder import mask2former_config

    _, model = original
    ours = model.decoder.layers[1]
    theirs = Mask2FormerMaskedAttentionDecoderLayer(mask2former_config(model.config)).eval()
    theirs.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(0)
    queries, query_position = torch.randn(6, 2, 32, generator=generator), torch.randn(6, 2, 32, generator=generator)
    memory, position = torch.randn(20, 2, 32, generator=generator), torch.randn(20, 2, 32, generator=generator)
    mask = torch.rand(4, 6, 20, generator=generator) > 0.7
    with torch.no_grad():
        a = ours(queries, memory, position, query_position, mask)
        b = theirs(queries, level_index=0, position_embeddings=[position], query_position_embeddings=query_position,
                   encoder_hidden_states=[memory], encoder_attention_mask=mask)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # ITA's layer (no self-attention) computes something else from the same weights.
    ita = type(ours)(mask2former_config(model.config), self_attention=False).eval()
    ita.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("self_attn")})
    with torch.no_grad():
        assert (ita(queries, memory, position, query_position, mask) - a).abs().max() > 0.1


def test_converted_folder_says_fcclip_and_round_trips(original, folder):
    _, reference = original
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "fcclip" and config["architectures"] == ["FCCLIPModel"]
    assert config["auto_map"]["AutoConfig"] == "configuration_fcclip.FCCLIPConfig"
    assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_fcclip.FCCLIPModel"
    assert (folder / "modeling_fcclip.py").is_file() and (folder / "modeling_ita.py").is_file()
    # Sizes from the tensors, the rest from the YAML chain (test resize, panoptic -> masks resized first, COCO).
    loaded, processor = load(folder)
    c = loaded.config
    assert (c.num_queries, c.decoder_layers, c.min_size_test, c.max_size_test, c.postprocess_order) == (6, 3, 48, 96, "before")
    assert len(c.seen_class_names) == 133
    assert processor.image_processor.shortest_edge == 48 and processor.seen_class_names == c.seen_class_names
    expected = reference.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.startswith("default_"):
            assert torch.equal(value, expected[key]), key
    assert not any(p.requires_grad for p in loaded.clip.parameters())
    assert type(AutoConfig.from_pretrained(folder)) is FCCLIPConfig
    assert type(AutoModel.from_pretrained(folder)) is FCCLIPModel
    assert type(AutoModelForSemanticSegmentation.from_pretrained(folder)) is FCCLIPModel
    assert type(AutoProcessor.from_pretrained(folder)) is ITAProcessor


def test_trust_remote_code_loads_the_folder_without_the_package(folder, tmp_path):
    model, processor = load(folder)
    inputs = processor(images=IMAGE, text=["sky", "car"])
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForSemanticSegmentation, AutoProcessor
        model = AutoModelForSemanticSegmentation.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "FCCLIPModel" and "fgaseg_hf" not in type(model).__module__, type(model)
        assert model.config.model_type == "fcclip" and model.dominant_projection is None
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "ITAProcessor", type(processor)
        with torch.no_grad():
            torch.save(model(**torch.load({str(tmp_path / "inputs.pt")!r})).logits, {str(tmp_path / "out.pt")!r})
        """
    )
    run_without_package(script, tmp_path)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_fgaseg_convert_command_writes_a_usable_fcclip_folder(original, tmp_path, capsys):
    from fgaseg_hf.cli import main

    root, reference = original
    code = main(["convert", "--checkpoint", str(root / "model_final.pth"), "--config", str(root / "fcclip.yaml"),
                 "--output", str(tmp_path / "converted")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "FC-CLIP" in captured.out
    model, processor = load(tmp_path / "converted")
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items() if not k.startswith("default_"))
    assert len(processor.prompt_templates) == 14 and processor.dominant_extra_names == []
    with torch.no_grad():
        out = model(**processor(images=IMAGE, text=["sky", "car"]))
    assert out.logits.shape[1] == 2 and out.dominant_probs is None


# ----------------------------------------------------------------------------- pipelines and fgaseg segment
def test_open_vocabulary_pipeline_equals_the_direct_computation(folder):
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    forwards = []
    forward = segmenter.model.forward
    segmenter.model.forward = lambda *a, **k: forwards.append(sorted(k)) or forward(*a, **k)
    labels = ["zebra", "road, street", "sky"]
    result = segmenter(IMAGE, candidate_labels=labels)
    expected = direct(folder, IMAGE, labels)
    coverage = np.zeros(expected.shape, dtype=int)
    for segment in result:
        mask = np.asarray(segment["mask"]) > 0
        assert np.array_equal(mask, (expected == labels.index(segment["label"])).numpy())
        coverage += mask
    assert (coverage == 1).all()
    # FC-CLIP's encoded vocabulary has no dominant-category embeddings.
    assert forwards and all("text_embeds" in keys and "dominant_text_embeds" not in keys for keys in forwards)
    default = pipeline("image-segmentation", model=str(folder))(IMAGE)
    assert {r["label"] for r in default} == {NAMES[i] for i in np.unique(direct(folder, IMAGE, NAMES).numpy())}


def test_segment_command_on_the_converted_folder(folder, tmp_path, capsys):
    from fgaseg_hf.cli import main

    IMAGE.save(tmp_path / "street.png")
    code = main(["segment", str(tmp_path / "street.png"), "--labels", "sky, road", "--model", str(folder),
                 "--output", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    labels = np.asarray(Image.open(record["labels_png"]))
    assert np.array_equal(labels, direct(folder, IMAGE, ["sky", "road"]).numpy())
    code = main(["segment", str(tmp_path / "street.png"), "--model", str(folder), "--output", str(tmp_path / "sw"),
                 "--sliding-window"])
    assert code == 2 and "FC-CLIP models have no sliding-window inference" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fgaseg evaluate
@pytest.mark.parametrize("class_lists", ["published", "plain"])
def test_evaluate_uses_the_models_own_protocol(folder, fake_ade150, tmp_path, capsys, monkeypatch,  # noqa: F811
                                               class_lists):
    """Default: FC-CLIP's published synonym lists reach the text-input builder; `--class-names plain`: CAT-Seg's
    one-name lists, as before."""
    import fgaseg_hf.modeling_ita as modeling_ita
    from fgaseg_hf.data.benchmarks import BENCHMARKS, class_names, published_class_synonyms
    from fgaseg_hf.evaluation import main as evaluate_main
    from fgaseg_hf.metrics import ConfusionMatrix

    prompted = []
    builder = modeling_ita.tokenize_ita_vocabulary

    def spy(tokenizer, class_names, *args, **kwargs):
        prompted.append(list(class_names))
        return builder(tokenizer, class_names, *args, **kwargs)

    monkeypatch.setattr(modeling_ita, "tokenize_ita_vocabulary", spy)
    output = tmp_path / "fcclip.json"
    option = [] if class_lists == "published" else ["--class-names", "plain"]
    code = evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(fake_ade150), "--output",
                          str(output), "--batch-size", "2", "--no-progress", "--device", "cpu", *option])
    assert code == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    if class_lists == "published":
        names = [",".join(synonyms) for synonyms in published_class_synonyms("ade150")]
        assert names[0] == "wall,walls,brick wall,stone wall,interior wall"
    else:
        names = class_names("ade150")
        assert names[0] == "wall"
    assert prompted == [names]
    assert report["protocol"]["class_names"] == class_lists
    monkeypatch.undo()
    model, processor = load(folder)
    confusion = ConfusionMatrix(150, ignore_index=255)
    spec = BENCHMARKS["ade150"]
    for label_path in sorted((fake_ade150 / spec.label_dirs["validation"]).glob("*.png")):
        image = Image.open(fake_ade150 / spec.image_dirs["validation"] / f"{label_path.stem}.jpg")
        label = torch.from_numpy(np.asarray(Image.open(label_path)).astype(np.int64))
        with torch.no_grad():
            outputs = model(**processor(images=image, text=names))
        confusion.update(processor.post_process_semantic_segmentation(outputs, target_sizes=[tuple(label.shape)])[0], label)
    assert report["results"]["ade150"]["mIoU"] == pytest.approx(confusion.compute_detectron2()["mean_iou"], abs=1e-12)
    assert "sliding_window" not in report["protocol"]


def test_voc20b_prompts_background_as_one_published_class(folder, tmp_path, capsys, monkeypatch):
    """FC-CLIP's VOC lists: 20 classes, then background (its class 0) last as label 20; the background IoU is the
    fraction of pixels predicted as class 20 (with the plain list: 39 context names folded into it)."""
    import fgaseg_hf.modeling_ita as modeling_ita
    from fgaseg_hf.data.benchmarks import BENCHMARKS, class_names, published_class_synonyms
    from fgaseg_hf.evaluation import main as evaluate_main

    spec = BENCHMARKS["voc20b"]
    image_path = tmp_path / spec.image_dirs["validation"] / "2007_000001.jpg"
    label_path = tmp_path / spec.label_dirs["validation"] / "2007_000001.png"
    image_path.parent.mkdir(parents=True)
    label_path.parent.mkdir(parents=True)
    IMAGE.save(image_path, format="PNG")  # lossless under the benchmark's .jpg name: the model sees IMAGE itself
    Image.fromarray(np.full((IMAGE.height, IMAGE.width), 20, np.uint8)).save(label_path)  # all background
    prompted = []
    builder = modeling_ita.tokenize_ita_vocabulary

    def spy(tokenizer, names, *args, **kwargs):
        prompted.append(list(names))
        return builder(tokenizer, names, *args, **kwargs)

    monkeypatch.setattr(modeling_ita, "tokenize_ita_vocabulary", spy)
    output = tmp_path / "voc.json"
    code = evaluate_main(["--model", str(folder), "--benchmarks", "voc20b", "--root", str(tmp_path), "--output",
                          str(output), "--no-progress", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    names = [",".join(synonyms) for synonyms in published_class_synonyms("voc20b")]
    assert prompted == [names] and len(names) == 21 and names[20].startswith("background,crops,bush")
    iou = json.loads(output.read_text())["results"]["voc20b"]["per_class_iou"]
    assert list(iou) == class_names("voc20b")[:20] + ["background"]
    monkeypatch.undo()
    model, processor = load(folder)
    with torch.no_grad():
        outputs = model(**processor(images=IMAGE, text=names))
    prediction = processor.post_process_semantic_segmentation(outputs, target_sizes=[(IMAGE.height, IMAGE.width)])[0]
    assert 0 < float((prediction == 20).double().mean()) < 1
    assert iou["background"] == pytest.approx(float((prediction == 20).double().mean()), abs=1e-12)


def test_resume_with_other_class_lists_is_refused(folder, fake_ade150, tmp_path, capsys):  # noqa: F811
    from fgaseg_hf.evaluation import main as evaluate_main

    def run(*args):
        return evaluate_main(["--model", str(folder), "--benchmarks", "ade150", "--root", str(fake_ade150),
                              "--output", str(tmp_path / "eval.json"), "--no-progress", "--device", "cpu",
                              "--save-every", "1", *args])

    assert run("--class-names", "plain", "--interrupt-after", "1") == 130
    capsys.readouterr()
    assert run("--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with another class lists (plain, now published)" in err, err
    assert run("--resume", "--class-names", "plain") == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "eval.json").read_text())["protocol"]["class_names"] == "plain"


# ----------------------------------------------------------------------------- fgaseg train
def test_fine_tuning_from_the_converted_folder(folder, tmp_path):
    from fgaseg_hf.data.synthetic import write_synthetic_dataset
    from fgaseg_hf.training import run_training
    from fgaseg_hf.training_families import family_of

    assert family_of({"from_pretrained": str(folder)}).name == "fcclip"
    assert family_of({"preset": "fcclip_convnext_large"}).name == "fcclip"
    scenes = write_synthetic_dataset(tmp_path / "scenes", 4, 2, size=(48, 64), seed=0, progress=False)
    config = {
        "model": {"from_pretrained": str(folder)},
        "data": {"path": str(scenes)},
        "augmentation": {"crop_size": 48, "min_sizes": [48, 64], "color_jitter": False},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "per_device_train_batch_size": 2,
                     "learning_rate": 1e-3, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
                     "report_to": "none", "seed": 0, "disable_tqdm": True, "use_cpu": True},
    }
    run_training(config)
    before, _ = load(folder)
    trained = FCCLIPModel.from_pretrained(tmp_path / "run").eval()
    assert trained.config.model_type == "fcclip" and trained.dominant_projection is None
    reference = dict(before.named_parameters())
    changed = {name for name, p in trained.named_parameters() if not torch.equal(p, reference[name])}
    assert not any(name.startswith("clip.") for name in changed)
    assert any(n.startswith("decoder.layers.0.self_attn.") for n in changed) and any(n.startswith("pixel_decoder.") for n in changed)
    # The run's classes become the default vocabulary and join the converted model's (COCO) seen classes.
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())["log_history"]
    assert all(np.isfinite(entry["loss"]) for entry in history if "loss" in entry)
    assert len(trained.config.seen_class_names) > 133
    assert set(trained.default_class_names()) <= set(trained.config.seen_class_names)
    assert type(ITAProcessor.from_pretrained(tmp_path / "run")) is ITAProcessor
