"""CAT-Seg on a transformers `CLIPModel`, built from FGA-Seg's blocks.

`CATSegModel` is `FGASegModel` under a `CATSegConfig`: the same CLIP features, guidance upsampling, cost embedding,
aggregation layers and guided upsampling decoder, without the pixel-to-text attention, the local cost and the
alignment projector (their attributes are None). Its outputs are `FGASegOutput`s (no auxiliary, alignment or
refined-text fields), its loss the original's single BCE term (`loss_terms["loss_main"]`).

`fgaseg_from_catseg` starts an FGA-Seg from CAT-Seg weights: every CAT-Seg tensor is copied to the tensor of the
same name, and FGA-Seg's additions keep their fresh initialisation.
"""

from __future__ import annotations

from transformers.models.auto import modeling_auto

from .configuration_catseg import CATSEG_SWITCHES, CATSegConfig
from .configuration_fgaseg import FGASegConfig
from .modeling_fgaseg import FGASegModel

# As for FGA-Seg: silences the image-segmentation pipeline's "not supported" line for this class name.
modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("catseg", "CATSegModel")


class CATSegModel(FGASegModel):
    """CAT-Seg: open-vocabulary semantic segmentation by cost aggregation (see the module docstring)."""

    config_class = CATSegConfig
    config: CATSegConfig

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str, preset: str | None = "catseg_vitb_384", **overrides) -> "CATSegModel":
        """A new CAT-Seg (randomly initialised head) on pretrained CLIP weights; see `FGASegModel.from_clip_pretrained`."""
        return super().from_clip_pretrained(clip_name_or_path, preset, **overrides)


def fgaseg_from_catseg(catseg, **overrides) -> tuple[FGASegModel, dict]:
    """An `FGASegModel` initialised from a CAT-Seg (`CATSegModel` or a folder): the CAT-Seg config with FGA-Seg's
    modules switched on (`decoder_mode` "fast" unless `overrides` say otherwise), every CAT-Seg tensor copied.

    Returns the model and a report: `copied` (names copied from CAT-Seg), `initialised` (FGA-Seg's new tensors).
    """
    if not isinstance(catseg, FGASegModel):
        catseg = CATSegModel.from_pretrained(catseg)
    values = catseg.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "custom_pipelines", "transformers_version"):
        values.pop(key, None)
    values.update({name: not value if isinstance(value, bool) else "fast" for name, value in CATSEG_SWITCHES.items()})
    values.update(overrides)
    model = FGASegModel(FGASegConfig(**values))
    source = catseg.state_dict()
    target = model.state_dict()
    copied = sorted(name for name in source if name in target)
    mismatched = [name for name in copied if source[name].shape != target[name].shape]
    if mismatched:
        raise ValueError(f"CAT-Seg and FGA-Seg disagree on the shapes of {mismatched[:10]}: override fewer settings")
    model.load_state_dict({name: source[name] for name in copied}, strict=False)
    model.apply_finetune_policy()
    initialised = sorted(name for name in target if name not in source)
    return model, {"copied": copied, "initialised": initialised}


__all__ = ["CATSegModel", "fgaseg_from_catseg"]
