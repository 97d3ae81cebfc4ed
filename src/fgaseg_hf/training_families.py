"""What fine-tuning does differently for each architecture (`model.family` in a run config): how the model and its
processor are built, the original's optimiser recipe, the default augmentation, how a batch of augmented crops
becomes model inputs, and how batches are collated. Everything else in `training` is shared.

- "fgaseg": FGA-Seg (CAT-Seg's recipe: AdamW 2e-4, weight decay 1e-4, cosine, CLIP at 0.01 x the rate, gradient
  clipping at 0.01). Inputs `pixel_values` `(B, 3, S, S)` and `labels` `(B, S, S)`.
- "ita": ITA (FC-CLIP's recipe: AdamW 1e-4, weight decay 0.05, constant rate, clipping at 0.01; CLIP frozen).
  Inputs `pixel_values`, `pixel_mask` and `labels` on a canvas padded to the size divisibility; the model turns the
  semantic maps into per-class masks (the original's semantic mapper) for its Hungarian-matched loss.
- "fcclip": FC-CLIP, ITA's parent: the same recipe, inputs and collation (`FCCLIPModel`; nothing in its backbone
  trains).
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


def _load_clip_start(load, source):
    """The model `load()` builds from `model.clip_pretrained`; a file that cannot be read (or holds anything but
    weights: nothing in it runs) is the run config's problem, reported in one line."""
    import pickle

    from .safe_io import UnsafeFileError

    try:
        return load()
    except UnsafeFileError:
        raise
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as error:
        text = str(error).strip()
        detail = text.splitlines()[0] if text else type(error).__name__
        if "Weights only load failed" in text or "Unsupported global" in text:
            detail = "refused to load: the weights file holds Python objects other than tensors"
        raise TrainingConfigError(f"model.clip_pretrained {source}: {detail}") from None


def _load_folder(model_class, processor_class, folder):
    """`(model, processor)` of `model.from_pretrained`; a folder whose files are missing, truncated or for another
    model family is reported in one line."""
    from .safe_io import model_loading_errors
    from .segment import SegmentError, check_processor_family

    try:
        model = model_class.from_pretrained(folder)
        processor = processor_class.from_pretrained(folder)
        check_processor_family(processor, processor_class, model.config, folder)
    except SegmentError as error:
        raise TrainingConfigError(f"model.from_pretrained {error}") from None
    except model_loading_errors() as error:
        text = str(error).strip()
        raise TrainingConfigError(f"model.from_pretrained {folder}: {text.splitlines()[0] if text else type(error).__name__}") from None
    return model, processor


class FGASegFamily:
    name = "fgaseg"
    recipe = {
        "learning_rate": 2e-4, "weight_decay": 1e-4, "lr_scheduler_type": "cosine", "warmup_steps": 0,
        "max_grad_norm": 0.01, "optim": "adamw_torch",
    }
    backbone_lr_multiplier = 0.01
    default_preset = "vitb_384_fast_cat"

    def classes(self):
        from .configuration_fgaseg import FGASegConfig
        from .modeling_fgaseg import FGASegModel

        return FGASegConfig, FGASegModel

    def build(self, block: dict, class_names: list[str]):
        """`(FGASegModel, FGASegProcessor)`, the class names stored as the model's default vocabulary. An FGA-Seg
        `from_pretrained` a CAT-Seg folder starts from CAT-Seg's weights (`fgaseg_from_catseg`: every shared tensor
        copied, FGA-Seg's additions initialised; `overrides` apply to the new config)."""
        from .configuration_fgaseg import preset_values
        from .processing_fgaseg import FGASegProcessor

        FGASegConfig, FGASegModel = self.classes()
        overrides = dict(block.get("overrides", {}))
        if "from_pretrained" in block and self.name == "fgaseg" and _folder_model_type(block["from_pretrained"]) == "catseg":
            from .modeling_catseg import fgaseg_from_catseg

            model, _ = fgaseg_from_catseg(block["from_pretrained"], **overrides)
            tokenizer = FGASegProcessor.from_pretrained(block["from_pretrained"]).tokenizer
            processor = FGASegProcessor.from_model_config(model.config, tokenizer)
        elif "from_pretrained" in block:
            model, processor = _load_folder(FGASegModel, FGASegProcessor, block["from_pretrained"])
        else:
            if "clip_pretrained" in block:
                model = _load_clip_start(
                    lambda: FGASegModel.from_clip_pretrained(block["clip_pretrained"], block.get("preset"), **overrides),
                    block["clip_pretrained"],
                )
            else:
                base = preset_values(block.get("preset", self.default_preset))
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
    title = "ITA"
    recipe = {
        "learning_rate": 1e-4, "weight_decay": 0.05, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "max_grad_norm": 0.01, "optim": "adamw_torch",
    }
    # Only the dominant-category projection is "backbone" and trainable (the original's add_tgt_em).
    backbone_lr_multiplier = 0.1
    default_preset = "ita_convnext_large_d_320"

    def classes(self):
        from .configuration_ita import ITAConfig
        from .modeling_ita import ITAModel

        return ITAConfig, ITAModel

    def build(self, block: dict, class_names: list[str]):
        """`(ITAModel, ITAProcessor)` with the class names as default vocabulary and as seen classes (weighted by
        alpha at inference, as the original treats its training classes)."""
        from .configuration_ita import ita_preset_values
        from .conversion_ita import convert_open_clip_checkpoint
        from .processing_ita import ITAProcessor

        ITAConfig, ITAModel = self.classes()

        if "clip_finetune" in block:
            raise TrainingConfigError(f"model.clip_finetune does not apply to {self.title}: its CLIP stays frozen")
        overrides = dict(block.get("overrides", {}))
        if "from_pretrained" in block:
            model, processor = _load_folder(ITAModel, ITAProcessor, block["from_pretrained"])
        else:
            values = merge_overrides(
                ita_preset_values(block.get("preset", self.default_preset)), overrides, ("text_config", "vision_config")
            )
            if "clip_pretrained" in block:
                # The CLIP's architecture comes from its weights; the head from the preset and overrides.
                head = {k: v for k, v in values.items() if k not in ("vision_config", "text_config", "vision_head_hidden_size")}
                model = _load_clip_start(
                    lambda: convert_open_clip_checkpoint(block["clip_pretrained"], architecture=self.name, **head),
                    block["clip_pretrained"],
                )
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


class FCCLIPFamily(ITAFamily):
    """FC-CLIP: ITA's recipe (it is FC-CLIP's), inputs and collation, on `FCCLIPModel` (nothing in its backbone
    trains: the CLIP is frozen and there is no text-query projection)."""

    name = "fcclip"
    title = "FC-CLIP"
    default_preset = "fcclip_convnext_large"

    def classes(self):
        from .configuration_fcclip import FCCLIPConfig
        from .modeling_fcclip import FCCLIPModel

        return FCCLIPConfig, FCCLIPModel


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


class CATSegFamily(FGASegFamily):
    """CAT-Seg: FGA-Seg's recipe (it is CAT-Seg's), inputs and collation, on `CATSegModel`."""

    name = "catseg"
    default_preset = "catseg_vitb_384"

    def classes(self):
        from .configuration_catseg import CATSegConfig
        from .modeling_catseg import CATSegModel

        return CATSegConfig, CATSegModel


def _folder_model_type(folder) -> str | None:
    config_file = Path(folder, "config.json")
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")


FAMILIES = {"fgaseg": FGASegFamily(), "catseg": CATSegFamily(), "ita": ITAFamily(), "fcclip": FCCLIPFamily()}


def family_of(block: dict):
    """The architecture a run config's `model` block trains: `family` when given, else the `from_pretrained`
    folder's model type or the preset's name (ITA presets start with "ita", FC-CLIP's with "fcclip")."""
    name = block.get("family")
    if name is None and "from_pretrained" in block:
        model_type = _folder_model_type(block["from_pretrained"])
        if model_type is not None:
            name = model_type if model_type in ("ita", "catseg", "fcclip") else "fgaseg"
    if name is None:
        preset = Path(str(block.get("preset", ""))).name
        name = next((f for f in ("ita", "catseg", "fcclip") if preset.startswith(f)), "fgaseg")
    if name not in FAMILIES:
        raise TrainingConfigError(f"model.family must be one of {sorted(FAMILIES)}, got {name!r}")
    return FAMILIES[name]
