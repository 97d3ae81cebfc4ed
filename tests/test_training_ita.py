"""Fine-tuning ITA through the shared training code: semantic maps become per-class masks, CLIP stays frozen, the
FC-CLIP recipe's optimiser groups, evaluation on the canvas and a complete saved folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import set_seed

from fgaseg_hf.data.synthetic import write_synthetic_dataset
from fgaseg_hf.training import TrainingConfigError, build_model, parameter_groups, run_training
from fgaseg_hf.training_families import FAMILIES, CanvasCollator, family_of

NAMES = ["sky", "water", "grass", "sand", "road", "building", "tree"]
TINY_ITA = {
    "family": "ita",
    "preset": "ita_convnext_large_d_320",
    "tokenizer": "characters",
    "overrides": {
        "vision_config": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "projection_dim": 32, "vocab_size": 83, "max_position_embeddings": 24, "bos_token_id": 81,
                        "eos_token_id": 82, "pad_token_id": 82},
        "vision_head_hidden_size": 64, "clip_image_size": 32, "feature_size": 32, "mask_feature_size": 32,
        "encoder_layers": 1, "encoder_feedforward_dim": 64, "num_attention_heads": 2, "hidden_dim": 32,
        "dim_feedforward": 64, "decoder_layers": 3, "num_learned_queries": 4, "num_text_queries": 4,
        "prompt_templates": ["a {}"], "train_num_points": 256, "min_size_test": 64, "max_size_test": 128,
    },
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), 8, 4, size=(64, 80), seed=0, progress=False)


def run_config(scenes, output, **training):
    return {
        "model": json.loads(json.dumps(TINY_ITA)),
        "data": {"path": str(scenes)},
        "augmentation": {"crop_size": 64, "min_sizes": [64, 80], "color_jitter": False},
        "training": {
            "output_dir": str(output), "max_steps": 4, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 3,
            "learning_rate": 1e-3, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
            "report_to": "none", "seed": 0, "disable_tqdm": True, "use_cpu": True, **training,
        },
    }


def test_family_is_inferred_from_the_preset_or_the_folder(tmp_path):
    assert family_of({"preset": "ita_convnext_large_d_320"}).name == "ita"
    assert family_of({"preset": "vitb_384_fast_cat"}).name == "fgaseg"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "ita"}))
    assert family_of({"from_pretrained": str(tmp_path)}).name == "ita"
    with pytest.raises(TrainingConfigError, match="model.family must be one of"):
        family_of({"family": "maskformer"})
    with pytest.raises(TrainingConfigError, match="does not apply to ITA"):
        build_model({**json.loads(json.dumps(TINY_ITA)), "clip_finetune": "all"}, NAMES)


@pytest.mark.parametrize("config_class, preset, family", [
    ("FGASegConfig", "vitb_384_no_fast_cat", "fgaseg"),
    ("CATSegConfig", "catseg_vitb_384", "catseg"),
    ("ITAConfig", "ita_convnext_large_d_320", "ita"),
    ("FCCLIPConfig", "fcclip_convnext_large", "fcclip"),
])
def test_each_family_is_inferred_from_its_saved_folder_and_its_preset(config_class, preset, family, tmp_path):
    """A CAT-Seg folder is an FGA-Seg config underneath and an FC-CLIP folder an ITA one: each still trains as itself."""
    import fgaseg_hf

    getattr(fgaseg_hf, config_class)().save_pretrained(tmp_path)
    inferred = family_of({"from_pretrained": str(tmp_path)})
    assert inferred.name == family and inferred is FAMILIES[family]
    assert inferred.classes()[0].__name__ == config_class
    assert family_of({"preset": preset}).name == family


def test_optimizer_groups_follow_the_fc_clip_recipe():
    model, processor = build_model(json.loads(json.dumps(TINY_ITA)), NAMES)
    family = FAMILIES["ita"]
    assert family.recipe["weight_decay"] == 0.05 and family.recipe["learning_rate"] == 1e-4
    groups = parameter_groups(model, 1e-4, 0.05, family.backbone_lr_multiplier)
    by_id = {id(p): g for g in groups for p in g["params"]}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("clip.") for name in trainable)
    assert {id(p) for p in model.parameters() if p.requires_grad} == set(by_id)
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = by_id[id(param)]
        # add_tgt_em: inside the original's backbone (0.1 x the rate) and an nn.Embedding (no decay).
        if name == "dominant_projection":
            assert (group["lr"], group["weight_decay"]) == (pytest.approx(1e-5), 0.0)
            continue
        embedding_or_norm = isinstance(owners[id(param)], (torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.GroupNorm))
        assert (group["lr"], group["weight_decay"]) == (pytest.approx(1e-4), 0.0 if embedding_or_norm else 0.05), name
    # The training classes become the default vocabulary and count as seen (alpha) at inference.
    assert model.default_class_names() == NAMES and model.config.seen_class_names == NAMES
    assert processor.seen_class_names == NAMES


def test_labels_give_the_same_loss_as_the_processors_mask_labels():
    model, processor = build_model(json.loads(json.dumps(TINY_ITA)), NAMES)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 70, 3), dtype=np.uint8), rng.integers(0, 256, (50, 64, 3), dtype=np.uint8)]
    maps = [np.full((64, 70), 255, np.uint8), np.full((50, 64), 255, np.uint8)]
    maps[0][:30], maps[0][30:, :20], maps[1][10:, 5:] = 2, 6, 0
    inputs = processor.image_processor(images, segmentation_maps=maps, do_resize=False)
    assert inputs["labels"].shape == (2, 64, 96) and int(inputs["labels"][1, 60, 0]) == 255  # canvas padding
    assert [c.tolist() for c in inputs["class_labels"]] == [[2, 6], [0]]
    model.train()
    results = []
    for targets in ({"labels": inputs["labels"]},
                    {"mask_labels": inputs["mask_labels"], "class_labels": inputs["class_labels"]}):
        torch.manual_seed(3)  # point sampling draws from the global generator
        out = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"], **targets)
        results.append(out.loss)
    assert torch.isfinite(results[0]) and results[0] == results[1]
    with pytest.raises(ValueError, match="labels must be"):
        model(pixel_values=inputs["pixel_values"], labels=inputs["labels"][:, :10])
    bad = inputs["labels"].clone()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"class ids outside 0\.\.6"):
        model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"], labels=bad)


def test_canvas_collator_pads_images_masks_and_labels():
    items = [
        {"pixel_values": torch.ones(3, 32, 64), "pixel_mask": torch.ones(32, 64, dtype=torch.long),
         "labels": torch.zeros(32, 64, dtype=torch.long)},
        {"pixel_values": torch.full((3, 64, 32), 2.0), "pixel_mask": torch.ones(64, 32, dtype=torch.long),
         "labels": torch.ones(64, 32, dtype=torch.long)},
    ]
    from fgaseg_hf.image_processing_ita import ITAImageProcessor

    batch = CanvasCollator(ITAImageProcessor(), 255)(items)
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    assert batch["pixel_values"][0, :, 40:].abs().sum() == 0 and batch["pixel_values"][1, :, :, 40:].abs().sum() == 0
    assert batch["pixel_mask"].sum(dim=(1, 2)).tolist() == [32 * 64, 64 * 32]
    assert (batch["labels"][0, 32:] == 255).all() and (batch["labels"][1, :, 32:] == 255).all()
    assert (batch["labels"][1, :, :32] == 1).all()


def test_training_updates_only_the_head_and_saves_a_complete_model(scenes, tmp_path):
    config = run_config(scenes, tmp_path / "run", max_steps=12, eval_strategy="steps", eval_steps=12)
    set_seed(0)
    reference, _ = build_model(json.loads(json.dumps(TINY_ITA)), NAMES)
    metrics = run_training(config)
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses

    from fgaseg_hf import ITAModel, ITAProcessor

    trained = ITAModel.from_pretrained(tmp_path / "run").eval()
    before = dict(reference.named_parameters())
    changed = {name for name, p in trained.named_parameters() if not torch.equal(p, before[name])}
    assert not any(name.startswith("clip.") for name in changed)
    assert any(name.startswith("decoder.") for name in changed) and any(n.startswith("pixel_decoder.") for n in changed)
    assert "dominant_projection" in changed
    assert trained.default_class_names() == NAMES and trained.config.seen_class_names == NAMES
    processor = ITAProcessor.from_pretrained(tmp_path / "run")
    assert processor.seen_class_names == NAMES
    # Continuing from the trained folder on other classes: both lists are seen.
    more, _ = build_model({"from_pretrained": str(tmp_path / "run"), "tokenizer": "characters"}, ["snow", "sky"])
    assert more.config.seen_class_names == NAMES + ["snow"] and more.default_class_names() == ["snow", "sky"]

    # The Trainer's mIoU is the saved model's, evaluated by hand on the validation images at the test size.
    hist = np.zeros((7, 7), dtype=np.int64)
    for meta in (scenes / "validation" / "metadata.jsonl").read_text().splitlines():
        row = json.loads(meta)
        image = Image.open(scenes / "validation" / row["file_name"])
        label = np.asarray(Image.open(scenes / "validation" / row["annotation_file_name"]))
        inputs = processor.image_processor(image)
        with torch.no_grad():
            out = trained(**inputs)
        prediction = processor.post_process_semantic_segmentation(out, target_sizes=[label.shape])[0].numpy()
        valid = label != 255
        hist += np.bincount(7 * label[valid].astype(np.int64) + prediction[valid], minlength=49).reshape(7, 7)
    present = hist.sum(1) > 0
    iou = np.diag(hist) / np.maximum(hist.sum(0) + hist.sum(1) - np.diag(hist), 1)
    assert metrics["eval_mean_iou"] == pytest.approx(iou[present].mean(), abs=1e-6)


@pytest.mark.slow
def test_two_processes_train_ita_and_report_the_same_eval_miou_as_one(scenes, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP over ITA's trainable head (CLIP frozen) runs, and with learning
    rate 0 the evaluation sees the same model as a single-process run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = run_config(scenes, tmp_path / "p2", max_steps=2, learning_rate=0.0, eval_strategy="steps", eval_steps=2,
                        per_device_eval_batch_size=2, ddp_backend="gloo")
    (tmp_path / "p2.json").write_text(json.dumps(config))
    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", "29611", str(script),
               "--config", str(tmp_path / "p2.json")]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "p2" / "training_history.json").read_text())["final_metrics"]
    one = run_training(run_config(scenes, tmp_path / "p1", max_steps=2, learning_rate=0.0, per_device_eval_batch_size=2))
    assert two["eval_mean_iou"] == one["eval_mean_iou"] and two["eval_overall_accuracy"] == one["eval_overall_accuracy"]
