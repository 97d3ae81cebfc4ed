"""Fine-tuning with Trainer: the original's optimizer groups, frozen parameters, resume, several processes, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import set_seed

from fgaseg_hf.data.synthetic import write_synthetic_dataset
from fgaseg_hf.training import SegmentationTrainer, TrainingConfigError, build_model, parameter_groups, run_training

REPO = Path(__file__).resolve().parents[1]
NAMES = ["sky", "water", "grass", "sand", "road", "building", "tree"]
TINY_MODEL = {
    "preset": "vitb_384_fast_cat",
    "tokenizer": "characters",
    "clip_finetune": "attention",
    "overrides": {
        "image_size": 64, "hidden_dim": 32, "decoder_dims": [16, 16], "decoder_guidance_dims": [16, 16],
        "decoder_guidance_proj_dims": [8, 8], "text_guidance_dim": 32, "text_guidance_proj_dim": 16,
        "appearance_guidance_dim": 32, "appearance_guidance_proj_dim": 16, "window_size": 4, "pooling_size": [2, 2],
        "p2t_num_heads": 4, "num_attention_heads": 2, "guidance_layer_indexes": [1, 2], "class_aggregation_length": 8,
        "inference_top_k": 3,
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
def scenes(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), 12, 6, size=(72, 72), seed=0, progress=False)


def run_config(scenes, output, **training):
    return {
        "model": json.loads(json.dumps(TINY_MODEL)),
        "data": {"path": str(scenes)},
        "augmentation": {"min_sizes": [64, 80], "sampling": "range", "color_jitter": True},
        "training": {
            "output_dir": str(output), "max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
            "learning_rate": 1e-3, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
            "report_to": "none", "seed": 0, "disable_tqdm": True, "use_cpu": True, **training,
        },
    }


def losses(history_file: Path) -> dict[int, float]:
    history = json.loads(history_file.read_text())["log_history"]
    return {entry["step"]: float(entry["loss"]) for entry in history if "loss" in entry}


def test_a_few_steps_reduce_the_loss(scenes, tmp_path):
    config = run_config(scenes, tmp_path / "run", max_steps=20, learning_rate=3e-3)
    config["augmentation"] = {"min_sizes": [72], "color_jitter": False, "flip": False}
    config["model"]["clip_finetune"] = "all"
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run_training(config, overrides={"training.eval_strategy": "steps", "training.eval_steps": 20})
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # no accelerator here: no pinning asked for
    steps = losses(tmp_path / "run" / "training_history.json")
    first, last = sum(steps[s] for s in (1, 2, 3)) / 3, sum(steps[s] for s in (18, 19, 20)) / 3
    assert last < 0.8 * first, steps
    assert 0.0 <= metrics["eval_mean_iou"] <= 1.0 and "eval_iou_sky" in metrics
    # The schedule evaluated at the last step: those are the final metrics, not a second identical evaluation.
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert len(evaluations) == 1 and evaluations[0]["step"] == 20
    assert metrics["eval_mean_iou"] == evaluations[0]["eval_mean_iou"]
    # The saved folder is a complete model: weights, processor, and the training classes as its vocabulary.
    from fgaseg_hf import FGASegModel, FGASegProcessor

    model = FGASegModel.from_pretrained(tmp_path / "run")
    assert [model.config.id2label[i] for i in range(7)] == NAMES
    assert FGASegProcessor.from_pretrained(tmp_path / "run").tokenize_vocabulary(["sky"])["input_ids"].shape[1] == 1


def test_optimizer_groups_follow_the_original_recipe(scenes, tmp_path):
    model, _ = build_model(json.loads(json.dumps(TINY_MODEL)), NAMES)
    groups = parameter_groups(model, 2e-4, 1e-4, 0.01)
    by_id = {id(p): g for g in groups for p in g["params"]}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(by_id) == len(trainable) == sum(len(g["params"]) for g in groups)
    no_decay_types = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d, torch.nn.Embedding)
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    for name, param in trainable.items():
        group = by_id[id(param)]
        assert group["lr"] == pytest.approx(2e-6 if name.startswith("clip.") else 2e-4), name
        assert group["weight_decay"] == (0.0 if isinstance(owners[id(param)], no_decay_types) else 1e-4), name
    # "attention" policy: the trainable CLIP parameters are exactly the q/v projection weights.
    assert {n.rsplit(".", 2)[-2] for n in trainable if n.startswith("clip.")} == {"q_proj", "v_proj"}
    assert any(g["weight_decay"] == 0.0 and g["lr"] == 2e-4 for g in groups)  # head norms
    trainer = SegmentationTrainer(
        model=model, args=__import__("transformers").TrainingArguments(str(tmp_path / "unused"), learning_rate=2e-4, weight_decay=1e-4,
                                                                      report_to="none", use_cpu=True),
        backbone_lr_multiplier=0.01,
    )
    optimizer = trainer.create_optimizer()
    assert sorted((g["lr"], g["weight_decay"]) for g in optimizer.param_groups) == sorted(
        (g["lr"], g["weight_decay"]) for g in groups
    )


def test_frozen_parameters_stay_bit_identical(scenes, tmp_path):
    config = run_config(scenes, tmp_path / "run", max_steps=3)
    set_seed(0)
    reference, _ = build_model(json.loads(json.dumps(TINY_MODEL)), NAMES)
    run_training(config)
    from fgaseg_hf import FGASegModel

    trained = FGASegModel.from_pretrained(tmp_path / "run")
    before = dict(reference.named_parameters())
    changed = {name for name, p in trained.named_parameters() if not torch.equal(p, before[name])}
    frozen = {name for name, p in reference.named_parameters() if name.startswith("clip.") and not p.requires_grad}
    assert frozen and not (changed & frozen)
    assert any(".q_proj.weight" in name for name in changed) and any(name.startswith("decoder.") for name in changed)


def test_resume_continues_identically(scenes, tmp_path):
    full = run_config(scenes, tmp_path / "full", max_steps=4, save_strategy="steps", save_steps=2)
    run_training(full)
    expected = losses(tmp_path / "full" / "training_history.json")
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")
    run_training(run_config(scenes, resumed_dir, max_steps=4, save_strategy="steps", save_steps=2), resume_from_checkpoint=True)
    got = losses(resumed_dir / "training_history.json")
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), (step, got, expected)


@pytest.mark.slow
def test_two_processes_report_the_same_eval_miou_as_one(scenes, tmp_path):
    """torchrun with 2 CPU processes (gloo). Learning rate 0 keeps the weights, so the evaluation sees the same model
    in both runs and every validation image exactly once."""
    results = {}
    for processes in (1, 2):
        config = run_config(scenes, tmp_path / f"p{processes}", max_steps=2, learning_rate=0.0, per_device_train_batch_size=2,
                            eval_strategy="steps", eval_steps=2, ddp_backend="gloo")
        (tmp_path / f"p{processes}.json").write_text(json.dumps(config))
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port",
                   str(29500 + processes), str(REPO / "scripts" / "train.py"), "--config", str(tmp_path / f"p{processes}.json")]
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[processes] = json.loads((tmp_path / f"p{processes}" / "training_history.json").read_text())["final_metrics"]
    assert results[1]["eval_mean_iou"] == results[2]["eval_mean_iou"]
    assert results[1]["eval_overall_accuracy"] == results[2]["eval_overall_accuracy"]


def test_labels_beyond_the_class_list_fail_with_a_clear_message(scenes, tmp_path, capsys):
    config = run_config(scenes, tmp_path / "run")
    config["data"]["class_names"] = ["sky", "water", "grass"]
    with pytest.raises(TrainingConfigError, match=r"holds class ids \[.*\] but the class list has 3 names"):
        run_training(config)
    (tmp_path / "bad.json").write_text(json.dumps(config))
    from fgaseg_hf.cli import main

    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: label map 0 holds class ids") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()
