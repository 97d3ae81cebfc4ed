"""Configuration of FC-CLIP (open-vocabulary segmentation with a single frozen convolutional CLIP) on ITA's parts.

FC-CLIP is ITA's parent: ITA = FC-CLIP + dominant-category text queries - decoder self-attention. `FCCLIPConfig` is
an `ITAConfig` with the three differences switched to FC-CLIP's side:
* `decoder_self_attention=True`: every decoder layer runs cross-attention, then self-attention, then the FFN;
* `num_text_queries=0`: only the `num_learned_queries` learned queries (250 in the released model);
* no dominant-category step: no whole-image CLIP forward, no category projection, no "other" vocabulary
  (`dominant_extra_names=[]`), so evaluation needs no random numbers.
Everything else (CLIP, pixel decoder, class head, in/out-of-vocabulary ensemble, loss) is ITA's, with the same names.

Travels with saved models (remote code): imports only its siblings and installed libraries.
"""

from __future__ import annotations

import os

from .configuration_ita import PRESET_DIR, ITAConfig, ita_preset_values


class FCCLIPConfig(ITAConfig):
    r"""
    Configuration of [`FCCLIPModel`]. Takes every argument of [`ITAConfig`] (names of the original detectron2
    config in its docs); the defaults that differ are FC-CLIP's:

    Args:
        num_learned_queries (`int`, *optional*, defaults to 250): [MASK_FORMER.NUM_OBJECT_QUERIES] of the released
            ConvNeXt-L model; they are the only queries.
        decoder_self_attention (`bool`, *optional*, defaults to `True`): must stay True (FC-CLIP's decoder layer).
        num_text_queries (`int`, *optional*, defaults to 0): must stay 0 (FC-CLIP has no text queries).
        dominant_extra_names (`list[str]`, *optional*, defaults to `[]`): FC-CLIP has no dominant vocabulary.
        postprocess_order (`str`, *optional*, defaults to `"before"`): the released eval configs enable panoptic
            and instance inference, which makes the original resize the masks before the class x mask product.
    """

    model_type = "fcclip"

    def __init__(
        self,
        num_learned_queries: int = 250,
        decoder_self_attention: bool = True,
        num_text_queries: int = 0,
        dominant_extra_names: list[str] = (),
        postprocess_order: str = "before",
        **kwargs,
    ):
        super().__init__(
            num_learned_queries=num_learned_queries, decoder_self_attention=decoder_self_attention,
            num_text_queries=num_text_queries, dominant_extra_names=dominant_extra_names,
            postprocess_order=postprocess_order, **kwargs,
        )

    def validate(self) -> None:
        """Raise a `ValueError` naming the first inconsistent setting."""
        super().validate()
        if self.num_text_queries != 0:
            raise ValueError(
                f"FCCLIPConfig.num_text_queries must be 0 (FC-CLIP has only learned queries), got {self.num_text_queries}; "
                "use ITAConfig for dominant-category text queries"
            )
        if not self.decoder_self_attention:
            raise ValueError("FCCLIPConfig.decoder_self_attention must be True (FC-CLIP's decoder layers keep it); "
                             "ITAConfig is the variant without it")
        if self.dominant_extra_names:
            raise ValueError("FCCLIPConfig.dominant_extra_names must be empty: FC-CLIP has no dominant-category vocabulary")

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> FCCLIPConfig:
        """Load a preset from the package's `configs/` (e.g. "fcclip_convnext_large") or from a JSON file."""
        return cls(**{**ita_preset_values(name_or_path), **overrides})


def available_fcclip_presets() -> list[str]:
    """Names of the FC-CLIP presets in `configs/` (files named fcclip_*.json)."""
    if not os.path.isdir(PRESET_DIR):
        return []
    return [f[:-5] for f in sorted(os.listdir(PRESET_DIR)) if f.startswith("fcclip_") and f.endswith(".json")]


__all__ = ["FCCLIPConfig", "available_fcclip_presets"]
