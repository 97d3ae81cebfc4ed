"""Fine-tuning with transformers' `Trainer`: `fgaseg train --config configs/<run>.yaml` (or `scripts/train.py`).

A run config (YAML or JSON) has four blocks:

- `model`: `family` ("fgaseg" or "ita"; by default inferred from the preset or the folder, see
  `training_families`), `preset` (a name from `configs/` or a JSON path) with `overrides` (any field of the
  family's config), plus one of `clip_pretrained` (a CLIP checkpoint to start from: a transformers CLIP for FGA-Seg,
  open_clip ConvNeXt weights for ITA) or `from_pretrained` (a folder of ours to continue); `tokenizer`: "clip"
  (CLIP's BPE, built offline), "characters" (one token per character, for small text towers trained from scratch)
  or a tokenizer folder; `clip_finetune` overrides FGA-Seg's policy (ITA's CLIP is always frozen).
- `data`: `path` (a folder with `train/` and `validation/` splits as `fgaseg_hf.data.synthetic` writes them, each
  with `metadata.jsonl`), or `dataset` (a `datasets` name or local folder for `load_dataset`) with `train_split` and
  `eval_split`; `image_column`, `label_column`; `class_names` (a list or a JSON file; default: the folder's
  `class_names.json`); `reduce_labels`.
- `augmentation`: `AugmentationConfig` fields (crop, resize jitter, category-area crop retries, flip, colour jitter).
- `training`: `TrainingArguments` fields, plus `backbone_lr_multiplier`. Defaults are each original's recipe
  (`training_families`): for FGA-Seg AdamW, lr 2e-4, weight decay 1e-4, cosine schedule without warm-up, CLIP at
  0.01 x the rate; for ITA AdamW, lr 1e-4, weight decay 0.05, constant rate. Both: no weight decay on
  normalisation layers and embeddings, gradient clipping at norm 0.01 over the whole model.

The same script runs on one CPU or GPU and under `torchrun` / `accelerate launch` on several processes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from .augmentation import AugmentationConfig, TrainingAugmentation
from .safe_io import UnsafeFileError
from .training_families import FGASegFamily, TrainingConfigError, family_of

NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Embedding)


# --------------------------------------------------------------------------------------------- config
def load_run_config(path_or_dict) -> dict:
    if isinstance(path_or_dict, dict):
        return json.loads(json.dumps(path_or_dict))
    path = Path(path_or_dict)
    if not path.is_file():
        raise TrainingConfigError(f"run config not found: {path}")
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, ValueError) as error:  # ValueError: bad JSON or not UTF-8
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        raise TrainingConfigError(f"{path}: not valid {kind} ({detail})") from None
    if not isinstance(config, dict):
        raise TrainingConfigError(f"{path}: a run config is a mapping with model, data, augmentation, training")
    unknown = set(config) - {"model", "data", "augmentation", "training"}
    if unknown:
        raise TrainingConfigError(f"{path}: unknown blocks {sorted(unknown)}")
    return config


# --------------------------------------------------------------------------------------------- data
def load_class_names(value, folder: Path | None) -> list[str]:
    from .prompt_templates import check_class_names

    if value is None:
        if folder is None or not (folder / "class_names.json").is_file():
            raise TrainingConfigError("data.class_names is required (a list or a JSON file)")
        value = str(folder / "class_names.json")
    where = value if isinstance(value, str) else "data.class_names"
    try:
        if isinstance(value, str):
            with open(value, encoding="utf-8") as handle:
                value = json.load(handle)
        return check_class_names(value)
    except (ValueError, TypeError) as error:  # bad JSON, duplicate or empty names
        raise TrainingConfigError(f"{where}: {error}") from None


def load_splits(data: dict):
    """`(train dataset, eval dataset or None, class names)` from the run config's `data` block."""
    from datasets import load_dataset

    image_column, label_column = data.get("image_column", "image"), data.get("label_column", "annotation")
    folder = Path(data["path"]) if "path" in data else None
    if folder is not None:
        if not (folder / "train").is_dir():
            raise TrainingConfigError(f"data.path {folder}: no train/ split folder")
        from .data.folders import load_split_folder

        loaded = {s: load_split_folder(folder / s) for s in ("train", "validation") if (folder / s).is_dir()}
        train, evaluation = loaded["train"], loaded.get(data.get("eval_split", "validation"))
    elif "dataset" in data:
        dataset = load_dataset(data["dataset"], **data.get("load_kwargs", {}))
        train = dataset[data.get("train_split", "train")]
        eval_split = data.get("eval_split", "validation")
        evaluation = dataset[eval_split] if eval_split in dataset else None
    else:
        raise TrainingConfigError("data needs `path` (a split folder) or `dataset` (for datasets.load_dataset)")
    if len(train) == 0:
        raise TrainingConfigError(f"the train split of {folder or data['dataset']} is empty: nothing to train on")
    for split in (train, evaluation):
        if split is not None and not {image_column, label_column} <= set(split.column_names):
            raise TrainingConfigError(
                f"the dataset has columns {split.column_names}; expected {image_column!r} and {label_column!r}"
            )
    if image_column != "image" or label_column != "annotation":
        train = train.rename_columns({image_column: "image", label_column: "annotation"})
        if evaluation is not None:
            evaluation = evaluation.rename_columns({image_column: "image", label_column: "annotation"})
    return train, evaluation, load_class_names(data.get("class_names"), folder)


def check_label_values(dataset, num_classes: int, ignore_index: int, reduce_labels: bool, limit: int = 2000) -> None:
    """Raise `TrainingConfigError` when label maps hold ids outside the class list (checks up to `limit` maps)."""
    from .image_processing_fgaseg import reduce_label_ids, to_label_array

    for index in range(min(limit, len(dataset))):
        label = to_label_array(dataset[index]["annotation"])
        if reduce_labels:
            label = reduce_label_ids(label, ignore_index)
        bad = np.unique(label[(label != ignore_index) & ((label < 0) | (label >= num_classes))])
        if bad.size:
            raise TrainingConfigError(
                f"label map {index} holds class ids {bad[:10].tolist()} but the class list has {num_classes} names "
                f"(valid ids 0..{num_classes - 1}, ignore {ignore_index})"
            )


class RecordOutputs(TrainerCallback):
    """Adds each checkpoint the first process saves to the output folder's manifest (what `--overwrite` may remove)."""

    def __init__(self, folder):
        self.folder = folder

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.folder.record_new_files()


class AugmentationEpoch(TrainerCallback):
    """Tells the training transform which epoch runs (the random stream of a sample depends on it)."""

    def __init__(self, holder: dict):
        self.holder = holder

    def on_epoch_begin(self, args, state, control, **kwargs):
        # A resumed run starts inside an epoch: state.epoch is then fractional.
        self.holder["epoch"] = int(math.floor(state.epoch + 1e-9))


def make_transforms(processor, augmentation: TrainingAugmentation, reduce_labels: bool, seed: int = 0, holder=None,
                    family=None):
    """Batch transforms for `Dataset.with_transform`: augmented crops for training (sample `i` of epoch `e` draws
    from a generator seeded with `(seed, e, i)`; the dataset needs a `sample_index` column), the processor alone for
    evaluation. `family` (`training_families`) turns images and label maps into model inputs (default FGA-Seg)."""
    holder = holder if holder is not None else {"epoch": 0}
    family = family or FGASegFamily()

    def train_transform(batch):
        rngs = [np.random.default_rng([seed, holder["epoch"], int(i)]) for i in batch["sample_index"]]
        pairs = [augmentation(image, label, rng) for image, label, rng in zip(batch["image"], batch["annotation"], rngs)]
        return family.encode(processor, [p[0] for p in pairs], [p[1] for p in pairs], reduce_labels, train=True)

    def eval_transform(batch):
        return family.encode(processor, batch["image"], batch["annotation"], reduce_labels, train=False)

    return train_transform, eval_transform


# --------------------------------------------------------------------------------------------- model
def build_model(model_block: dict, class_names: list[str]):
    """`(model, processor)` for the run (FGA-Seg or ITA, see `training_families`), the class names stored as the
    model's default vocabulary."""
    return family_of(model_block).build(model_block, class_names)


def parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float, backbone_lr_multiplier: float):
    """AdamW groups of the original recipe: backbone (CLIP) parameters at `backbone_lr_multiplier` times the rate;
    no weight decay on normalisation layers and embeddings (nor on the parameters a model lists in
    `no_weight_decay_parameters`: those the original held in embedding modules)."""
    prefixes = tuple(getattr(model, "backbone_parameter_prefixes", ()))
    no_decay_names = tuple(getattr(model, "no_weight_decay_parameters", ()))
    groups: dict[tuple[bool, bool], list] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            key = (full_name.startswith(prefixes), isinstance(module, NO_DECAY_MODULES) or full_name in no_decay_names)
            groups.setdefault(key, []).append(param)
    return [
        {
            "params": params,
            "lr": learning_rate * (backbone_lr_multiplier if backbone else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{'backbone' if backbone else 'head'}{'-no-decay' if no_decay else ''}",
        }
        for (backbone, no_decay), params in sorted(groups.items())
    ]


class SegmentationTrainer(Trainer):
    """`Trainer` with the original's optimizer groups."""

    def __init__(self, *args, backbone_lr_multiplier: float = 0.01, **kwargs):
        self.backbone_lr_multiplier = backbone_lr_multiplier
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            args = self.args
            groups = parameter_groups(self.model, args.learning_rate, args.weight_decay, self.backbone_lr_multiplier)
            self.optimizer = torch.optim.AdamW(
                groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
            )
        return self.optimizer


# --------------------------------------------------------------------------------------------- run
def training_arguments(block: dict, output_dir: str | None, recipe: dict | None = None) -> TrainingArguments:
    values = {**(recipe if recipe is not None else FGASegFamily.recipe), **block}
    values.pop("backbone_lr_multiplier", None)
    if output_dir is not None:
        values["output_dir"] = output_dir
    if "output_dir" not in values:
        raise TrainingConfigError("training.output_dir is required")
    known = {f.name for f in fields(TrainingArguments)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainingConfigError(f"unknown training arguments: {unknown}")
    # Images are transformed on the fly; metrics stream batch by batch; evaluation labels have a fixed size.
    values.update(remove_unused_columns=False, batch_eval_metrics=True, label_names=["labels"])
    if "dataloader_pin_memory" not in values and not _has_accelerator():
        values["dataloader_pin_memory"] = False  # pinning needs an accelerator; on CPU the data loader warns per loader
    return TrainingArguments(**values)


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def final_metrics(trainer, evaluation) -> dict:
    """The eval metrics after training: those the Trainer logged at the last step when its schedule evaluated
    there (evaluating again would give the same numbers), otherwise a final `evaluate()`."""
    if evaluation is None:
        return {}
    if trainer.args.load_best_model_at_end:
        return trainer.evaluate()  # the model now is the best checkpoint, not the last step's
    state = trainer.state
    for entry in reversed(state.log_history):
        if "eval_loss" in entry and entry.get("step") == state.global_step:
            return {k: v for k, v in entry.items() if k.startswith("eval_") or k == "epoch"}
    return trainer.evaluate()


def run_training(config, output_dir: str | None = None, resume_from_checkpoint=None, overrides: dict | None = None,
                 overwrite: bool = False):
    """Train as the run config says; saves the model and processor in `output_dir` and returns the final eval
    metrics (empty without an eval split).

    `resume_from_checkpoint=True` continues from the newest complete `checkpoint-N` of `output_dir` (`checkpoints`).
    A fresh run refuses a non-empty `output_dir` unless `overwrite`, which first removes only the files an earlier
    run recorded there (`safe_io.OutputFolder`)."""
    from .metrics.mean_iou import argmax_logits_for_metrics, streaming_metrics_for_trainer

    config = load_run_config(config)
    for key, value in (overrides or {}).items():
        block, _, name = key.partition(".")
        config.setdefault(block, {})[name] = value
    data = config.get("data", {})
    train, evaluation, class_names = load_splits(data)
    # Seeded before the model is built, so that a new head (or a model from scratch) starts the same every run.
    set_seed(int(config.get("training", {}).get("seed", 42)))  # TrainingArguments' default seed
    family = family_of(config.get("model", {}))
    try:
        model, processor = family.build(config.get("model", {}), class_names)
    except (TrainingConfigError, UnsafeFileError):
        raise
    except (ValueError, OSError) as error:  # a config value the model's config refuses, an unreadable file
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainingConfigError(f"model: {detail}") from None
    reduce_labels = bool(data.get("reduce_labels", False))
    check_label_values(train, len(class_names), model.config.ignore_index, reduce_labels)
    if evaluation is not None:
        check_label_values(evaluation, len(class_names), model.config.ignore_index, reduce_labels)

    augmentation_block = family.default_augmentation(model.config)
    augmentation_block.update(config.get("augmentation", {}))
    augmentation_block["ignore_index"] = model.config.ignore_index
    augmentation = TrainingAugmentation(AugmentationConfig(**augmentation_block))
    seed = int(config.get("training", {}).get("seed", 42))
    epoch_holder = {"epoch": 0}
    train_transform, eval_transform = make_transforms(processor, augmentation, reduce_labels, seed, epoch_holder, family)
    train = train.add_column("sample_index", list(range(len(train))))

    args = training_arguments(config.get("training", {}), output_dir, family.recipe)
    if evaluation is None and args.eval_strategy != "no":
        raise TrainingConfigError("evaluation is enabled but the data has no eval split")
    from .checkpoints import resolve_resume
    from .safe_io import OutputFolder

    resume = resolve_resume(resume_from_checkpoint, args.output_dir)
    # A resumed run adds to its own folder; every process checks, only the first one writes.
    outputs = OutputFolder(args.output_dir, overwrite, option="training.output_dir", additive=resume is not None)
    outputs.prepare(modify=int(os.environ.get("RANK", "0")) == 0)
    trainer = SegmentationTrainer(
        model=model,
        args=args,
        train_dataset=train.with_transform(train_transform),
        eval_dataset=evaluation.with_transform(eval_transform) if evaluation is not None else None,
        compute_metrics=streaming_metrics_for_trainer(len(class_names), model.config.ignore_index, model.config.id2label),
        preprocess_logits_for_metrics=argmax_logits_for_metrics,
        data_collator=family.collator(processor, model.config.ignore_index),
        backbone_lr_multiplier=float(config.get("training", {}).get("backbone_lr_multiplier", family.backbone_lr_multiplier)),
        callbacks=[AugmentationEpoch(epoch_holder)],
    )
    trainer.add_callback(RecordOutputs(outputs))
    trainer.train(resume_from_checkpoint=resume)
    metrics = final_metrics(trainer, evaluation)
    if trainer.is_world_process_zero():
        outputs.record_new_files()  # the checkpoints

        def write(staging):
            trainer.save_model(str(staging))
            processor.save_pretrained(staging)
            history = {"log_history": trainer.state.log_history, "final_metrics": metrics}
            (staging / "training_history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")

        # Staged, so that a same-named file of the user's (config.json, say) is refused, never replaced, and the
        # trained model is then kept beside the folder instead of being lost.
        outputs.write_staged(write, keep_refused=True)
    return metrics


def main(argv=None) -> int:
    import sys

    from .safe_io import OutputFolderError, UnsafeFileError
    from .training_cli import build_parser

    args = build_parser().parse_args(argv)
    overrides = {}
    try:
        for item in args.set:
            key, _, value = item.partition("=")
            if "." not in key or not _:
                raise TrainingConfigError(f"--set {item!r}: expected BLOCK.KEY=VALUE")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        metrics = run_training(args.config, args.output_dir, args.resume, overrides, overwrite=args.overwrite)
    except (TrainingConfigError, UnsafeFileError, OutputFolderError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if metrics and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}, indent=2))
    return 0
