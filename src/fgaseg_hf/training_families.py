"""What fine-tuning does differently for each architecture (`model.family` in a run config): how the model and its
processor are built, the original's optimiser recipe, the default augmentation, how a batch of augmented crops
becomes model inputs, and how batches are collated. Everything else in `training` is shared.

- "fgaseg": FGA-Seg (CAT-Seg's recipe: AdamW 2e-4, weight decay 1e-4, cosine, CLIP at 0.01 x the rate, gradient
  clipping at 0.01). Inputs `pixel_values` `(B, 3, S, S)` and `labels` `(B, S, S)`.
- "ita": ITA (FC-CLIP's recipe: AdamW 1e-4, weight decay 0.05, constant rate, clipping at 0.01; CLIP frozen).
  Inputs `pixel_values`, `pixel_mask` and `labels` on a canvas padded to the size divisibility; the model turns the
  semantic maps into per-class masks (the original's semantic mapper) for its Hungarian-matched loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


class TrainingConfigError(ValueError):
    """A problem with the run config or the data, reported in one line."""


def build_tokenizer(name: str, max_length: int):
    from .clip_tokenizer import build_character_tokenizer, build_clip_tokenizer

    if name == "clip":
        return build_clip_tokenizer(max_length)
    if name == "characters":
        return build_character_tokenizer(max_length)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def merge_overrides(base: dict, overrides: dict, sub_configs: tuple[str, ...]) -> dict:
    """`base` preset values updated by `overrides`; the dicts named in `sub_configs` are merged key by key."""
    merged = {**base, **overrides}
    for key in sub_configs:
        if isinstance(overrides.get(key), dict):
            merged[key] = {**(base.get(key) or {}), **overrides[key]}
    return merged


def check_tokenizer(tokenizer, vocab_size: int) -> None:
    if len(tokenizer) > vocab_size:
        raise TrainingConfigError(f"the tokenizer has {len(tokenizer)} tokens but the text tower's vocabulary has {vocab_size}")


class FGASegFamily:
    name = "fgaseg"
    recipe = {
        "learning_rate": 2e-4, "weight_decay": 1e-4, "lr_scheduler_type": "cosine", "warmup_steps": 0,
        "max_grad_norm": 0.01, "optim": "adamw_torch",
    }
    backbone_lr_multiplier = 0.01

    def build(self, block: dict, class_names: list[str]):
        """`(FGASegModel, FGASegProcessor)`, the class names stored as the model's default vocabulary."""
        from .configuration_fgaseg import FGASegConfig, preset_values
        from .modeling_fgaseg import FGASegModel
        from .processing_fgaseg import FGASegProcessor

        overrides = dict(block.get("overrides", {}))
        if "from_pretrained" in block:
            model = FGASegModel.from_pretrained(block["from_pretrained"])
            processor = FGASegProcessor.from_pretrained(block["from_pretrained"])
        else:
            if "clip_pretrained" in block:
                model = FGASegModel.from_clip_pretrained(block["clip_pretrained"], block.get("preset"), **overrides)
            else:
                base = preset_values(block.get("preset", "vitb_384_fast_cat"))
                clip = merge_overrides(base.pop("clip_config"), overrides.pop("clip_config", {}), ("text_config", "vision_config"))
                model = FGASegModel(FGASegConfig(clip_config=clip, **{**base, **overrides}))
            text = model.config.clip_config.text_config
            tokenizer = build_tokenizer(block.get("tokenizer", "clip"), text.max_position_embeddings)
            check_tokenizer(tokenizer, text.vocab_size)
            processor = FGASegProcessor.from_model_config(model.config, tokenizer)
        if "clip_finetune" in block:
            model.apply_finetune_policy(block["clip_finetune"])
        model.set_default_vocabulary(class_names, processor.tokenize_vocabulary(class_names)["input_ids"])
        return model, processor

    def default_augmentation(self, config) -> dict:
        return {"crop_size": config.clip_resolution, "min_sizes": [config.clip_resolution]}

    def encode(self, processor, images, labels, reduce_labels: bool, train: bool) -> dict:
        out = processor.image_processor(images, segmentation_maps=labels, do_reduce_labels=reduce_labels)
        return {"pixel_values": out["pixel_values"], "labels": out["labels"]}

    def collator(self, processor, ignore_index: int):
        return None  # fixed-size inputs: transformers' default collator


class ITAFamily:
    name = "ita"
    recipe = {
        "learning_rate": 1e-4, "weight_decay": 0.05, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "max_grad_norm": 0.01, "optim": "adamw_torch",
    }
    # Only the dominant-category projection is "backbone" and trainable (the original's add_tgt_em).
    backbone_lr_multiplier = 0.1

    def build(self, block: dict, class_names: list[str]):
        """`(ITAModel, ITAProcessor)` with the class names as default vocabulary and as seen classes (weighted by
        alpha at inference, as the original treats its training classes)."""
        from .configuration_ita import ITAConfig, ita_preset_values
        from .conversion_ita import convert_open_clip_checkpoint
        from .modeling_ita import ITAModel
        from .processing_ita import ITAProcessor

        if "clip_finetune" in block:
            raise TrainingConfigError("model.clip_finetune does not apply to ITA: its CLIP stays frozen")
        overrides = dict(block.get("overrides", {}))
        if "from_pretrained" in block:
            model = ITAModel.from_pretrained(block["from_pretrained"])
            processor = ITAProcessor.from_pretrained(block["from_pretrained"])
        else:
            values = merge_overrides(
                ita_preset_values(block.get("preset", "ita_convnext_large_d_320")), overrides, ("text_config", "vision_config")
            )
            if "clip_pretrained" in block:
                # The CLIP's architecture comes from its weights; the head from the preset and overrides.
                head = {k: v for k, v in values.items() if k not in ("vision_config", "text_config", "vision_head_hidden_size")}
                model = convert_open_clip_checkpoint(block["clip_pretrained"], **head)
            else:
                model = ITAModel(ITAConfig(**values))
            text = model.config.text_config
            tokenizer = build_tokenizer(block.get("tokenizer", "clip"), text.max_position_embeddings)
            check_tokenizer(tokenizer, text.vocab_size)
            processor = ITAProcessor.from_model_config(model.config, tokenizer)
        # A new head has seen only this run's classes (not the preset's COCO list); a trained one keeps its own too.
        previous = list(model.config.seen_class_names) if "from_pretrained" in block else []
        seen = previous + [n for n in class_names if n not in previous]
        model.config.seen_class_names = processor.seen_class_names = seen
        model.set_default_vocabulary(class_names, processor.tokenizer)
        return model, processor

    def default_augmentation(self, config) -> dict:
        # FC-CLIP's large-scale jitter (scale 0.1-2.0 of a 1024 canvas, 1024 crops), as a shortest-edge range.
        return {"crop_size": 1024, "min_sizes": [102, 2048], "sampling": "range", "color_jitter": False}

    def encode(self, processor, images, labels, reduce_labels: bool, train: bool) -> dict:
        # Training crops are already at their final size; evaluation uses the test-time resize.
        out = processor.image_processor(
            images, segmentation_maps=labels, do_reduce_labels=reduce_labels, do_resize=False if train else None
        )
        return {"pixel_values": out["pixel_values"], "pixel_mask": out["pixel_mask"], "labels": out["labels"]}

    def collator(self, processor, ignore_index: int):
        return CanvasCollator(processor.image_processor, ignore_index)


class CanvasCollator:
    """Batches images of different sizes on one zero-padded canvas (the image processor's `collate`), their
    labels padded with the ignore index."""

    def __init__(self, image_processor, ignore_index: int):
        self.image_processor, self.ignore_index = image_processor, ignore_index

    def __call__(self, items: list[dict]) -> dict:
        batch = self.image_processor.collate(
            [{"pixel_values": item["pixel_values"][None], "pixel_mask": item["pixel_mask"][None]} for item in items]
        )
        labels = torch.full((len(items), *batch["pixel_values"].shape[-2:]), self.ignore_index, dtype=torch.long)
        for index, item in enumerate(items):
            labels[index, : item["labels"].shape[0], : item["labels"].shape[1]] = item["labels"]
        return {**batch, "labels": labels}


FAMILIES = {"fgaseg": FGASegFamily(), "ita": ITAFamily()}


def family_of(block: dict):
    """The architecture a run config's `model` block trains: `family` when given, else the `from_pretrained`
    folder's model type or the preset's name (ITA presets start with "ita")."""
    name = block.get("family")
    if name is None and "from_pretrained" in block:
        config_file = Path(block["from_pretrained"], "config.json")
        if config_file.is_file():
            name = "ita" if json.loads(config_file.read_text(encoding="utf-8")).get("model_type") == "ita" else "fgaseg"
    if name is None:
        name = "ita" if Path(str(block.get("preset", ""))).name.startswith("ita") else "fgaseg"
    if name not in FAMILIES:
        raise TrainingConfigError(f"model.family must be one of {sorted(FAMILIES)}, got {name!r}")
    return FAMILIES[name]
