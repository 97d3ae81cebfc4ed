"""FC-CLIP (Yu et al., "Convolutions Die Hard: Open-Vocabulary Panoptic Segmentation with Single Frozen
Convolutional CLIP", NeurIPS 2023) on ITA's parts.

ITA is FC-CLIP plus dominant-category text queries minus the decoder's self-attention, so FC-CLIP is `ITAModel` with
an `FCCLIPConfig`: the decoder layers keep their self-attention (cross-attention, then self-attention, then FFN),
the queries are the learned ones only, and there is no dominant-category step (no whole-image CLIP forward, no
category projection). Forward, in named steps (the original's names in brackets):
1. text classifier: every synonym in every prompt template through the frozen CLIP text tower, averaged over
   templates, void embedding appended [FCCLIP.get_text_classifier]
2. frozen ConvNeXt trunk features (res2..res5) [extract_features_convnext]
3. Mask2Former's deformable pixel decoder [MSDeformAttnPixelDecoder]
4. masked-attention decoder with self-attention; FC-CLIP's class head [MultiScaleMaskedTransformerDecoder]
5. inference: mask-pooled dense CLIP features classified by CLIP, geometric ensemble with the in-vocabulary
   classifier, semantic maps [FCCLIP.forward, semantic_inference]; training: Hungarian matching + CE / BCE / dice
   [SetCriterion]

Inputs and outputs are `ITAModel`'s (an `ITAOutput` whose dominant-category fields are None); the dominant-category
inputs (`dominant_input_ids`, `dominant_indices`, `clip_pixel_values`) are accepted and ignored, so that
`ITAProcessor` serves both models.

Travels with saved models (remote code): imports only its siblings and installed libraries.
"""

from __future__ import annotations

from transformers.models.auto import modeling_auto

from .configuration_fcclip import FCCLIPConfig
from .modeling_ita import ITAModel, ITAOutput

# As for ITA: the image-segmentation pipeline checks model class names against a static table.
modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("fcclip", "FCCLIPModel")

FCCLIPOutput = ITAOutput


class FCCLIPModel(ITAModel):
    """FC-CLIP: a frozen ConvNeXt CLIP, Mask2Former's pixel decoder and masked-attention decoder, in-vocabulary
    mask classification ensembled with CLIP's out-of-vocabulary classification (see the module docstring)."""

    config_class = FCCLIPConfig
    config: FCCLIPConfig
    base_model_prefix = "fcclip"
    # No add_tgt_em: the frozen CLIP is the whole backbone and nothing in it trains.
    backbone_parameter_prefixes = ("clip.",)
    no_weight_decay_parameters = ()

    def __init__(self, config: FCCLIPConfig):
        if getattr(config, "model_type", None) != FCCLIPConfig.model_type:
            raise ValueError(f"FCCLIPModel needs an FCCLIPConfig, got {type(config).__name__}")
        super().__init__(config)


__all__ = ["FCCLIPModel", "FCCLIPOutput"]
