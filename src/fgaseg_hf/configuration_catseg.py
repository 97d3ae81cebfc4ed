"""Configuration of CAT-Seg (Cho et al., CVPR 2024), the model FGA-Seg is built on.

CAT-Seg is FGA-Seg without its three additions (the pixel-to-text cross-attention, the local-alignment cost with
its fusions, and the alignment projector), with the "no_fast" decoder. `CATSegConfig` is an `FGASegConfig` with
those switched off, under its own `model_type`, so that a saved folder says which architecture it holds.
"""

from __future__ import annotations

import os

from .configuration_fgaseg import FGASegConfig, preset_values

# The switches that make an FGA-Seg a CAT-Seg; a CAT-Seg config always holds these values.
CATSEG_SWITCHES = {
    "use_pixel_to_text_attention": False,
    "use_local_alignment": False,
    "use_alignment_projector": False,
    "decoder_mode": "no_fast",
}


class CATSegConfig(FGASegConfig):
    r"""
    Configuration of [`CATSegModel`]: the fields of [`FGASegConfig`] that CAT-Seg has (cost embedding, spatial and
    class aggregation, guided upsampling; the original's `MODEL.SEM_SEG_HEAD.*` names in `FGASegConfig`'s docs).
    The FGA-Seg-only fields (`p2t_*`, `local_alignment_kernel_size`, `projector_kernel_size`, `fusion_mode`,
    `auxiliary_loss_weights`, `alignment_loss_weight`, `inference_top_k`, `top_k_scope`) are kept but unused.

    Presets: "catseg_vitb_384" (the released ViT-B/16 model, `configs/vitb_384.yaml`) and "catseg_vitl_336"
    (ViT-L/14 at 336 px, `configs/vitl_336.yaml`).
    """

    model_type = "catseg"

    def __init__(self, **kwargs):
        for name, value in CATSEG_SWITCHES.items():
            given = kwargs.get(name, value)
            if given != value:
                raise ValueError(
                    f"CATSegConfig.{name} must be {value!r} (CAT-Seg has no such FGA-Seg module), got {given!r}; "
                    "build an FGASegConfig for FGA-Seg"
                )
            kwargs[name] = value
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> "CATSegConfig":
        """Load a CAT-Seg preset (e.g. "catseg_vitb_384") or a JSON file path."""
        return cls(**{**preset_values(name_or_path), **overrides})


__all__ = ["CATSEG_SWITCHES", "CATSegConfig"]
