"""Configuration of ITA (Image-Text Aggregation: FC-CLIP with dominant-category text queries) on transformers parts."""

from __future__ import annotations

import json
import os

from transformers import CLIPTextConfig, ConvNextConfig, PretrainedConfig

# The package's `configs/` (a link to the repository's `configs/`), shared with the FGA-Seg presets.
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# ViLD's 14 prompt templates, which FC-CLIP and ITA fill with every synonym of a class.
VILD_TEMPLATES = [
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
DCU_CROP_MODES = ("resize_center_crop", "random_resized_crop")
POSTPROCESS_ORDERS = ("after", "before")


class ITAConfig(PretrainedConfig):
    r"""
    Configuration of [`ITAModel`]. Names of the original detectron2 config are given in brackets.

    Args:
        vision_config (`dict` or `ConvNextConfig`): the CLIP image trunk (timm ConvNeXt of open_clip). Its
            `layer_norm_eps` must be 1e-6: it is the eps of the CLIP pooling head's LayerNorm.
        text_config (`dict` or `CLIPTextConfig`): the CLIP text tower; `projection_dim` is the CLIP embedding
            size [FC_CLIP.EMBED_DIM]; open_clip uses exact GELU (`hidden_act="gelu"`).
        vision_head_hidden_size (`int`, *optional*): width of the CLIP image head MLP (open_clip's `timm_proj="mlp"`),
            2 x the embedding size by default.
        logit_scale_init_value (`float`): initial CLIP logit scale (log).
        clip_image_size (`int`): side of the square crop the dominant-category step gives the whole CLIP.
        clip_image_mean / clip_image_std (`list[float]`): normalisation of that crop (OpenAI CLIP values, 0-1 range).
        pixel_mean / pixel_std (`list[float]`): normalisation of `pixel_values` in 0-255 units [MODEL.PIXEL_MEAN/STD];
            used to recover the image when the dominant-category crop is derived from `pixel_values`.
        size_divisibility (`int`): inputs are zero padded to a multiple of this [MASK_FORMER.SIZE_DIVISIBILITY].
        min_size_test / max_size_test (`int`): test-time resize of the image processor: shortest edge to
            `min_size_test` unless the longest would exceed `max_size_test` [INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST;
            detectron2's defaults 800 / 1333, which ITA's eval config keeps].
        has_default_vocabulary (`bool`): the model carries a default vocabulary (`id2label`, synonyms comma
            separated, and its token ids; see `ITAModel.set_default_vocabulary`).
        feature_size (`int`): pixel decoder width [SEM_SEG_HEAD.CONVS_DIM].
        mask_feature_size (`int`): mask feature width [SEM_SEG_HEAD.MASK_DIM].
        encoder_layers (`int`): deformable encoder layers [SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS].
        encoder_feedforward_dim (`int`): deformable encoder FFN width (hard-coded 1024 in the original).
        num_attention_heads (`int`): heads of the deformable encoder and the decoder [MASK_FORMER.NHEADS].
        hidden_dim (`int`): decoder width [MASK_FORMER.HIDDEN_DIM].
        dim_feedforward (`int`): decoder FFN width [MASK_FORMER.DIM_FEEDFORWARD].
        decoder_layers (`int`): [MASK_FORMER.DEC_LAYERS]; the decoder has `decoder_layers - 1` layers and makes
            `decoder_layers` predictions (one on the initial queries).
        pre_norm (`bool`): [MASK_FORMER.PRE_NORM].
        decoder_self_attention (`bool`): the decoder layers keep Mask2Former's query self-attention (cross-attention,
            then self-attention, then FFN: FC-CLIP). ITA removed it (cross-attention, then FFN; default False).
        num_learned_queries (`int`): [MASK_FORMER.NUM_OBJECT_QUERIES].
        num_text_queries (`int`): dominant categories turned into text queries (hard-coded 20 in the original).
            0 removes the dominant-category step (no whole-image CLIP forward, no projection): FC-CLIP.
        dominant_crop_mode (`str`): how the whole-image CLIP crop is made when none is given:
            "resize_center_crop" (deterministic: shortest edge to `clip_image_size`, centre crop; default) or
            "random_resized_crop" (the original's training augmentation: scale 0.9-1.0, drawn from the global RNG).
        geometric_ensemble_alpha (`float`): weight of the CLIP branch for seen classes [GEOMETRIC_ENSEMBLE_ALPHA].
        geometric_ensemble_beta (`float`): weight of the CLIP branch for unseen classes [GEOMETRIC_ENSEMBLE_BETA].
        ensemble_on_valid_mask (`bool`): [ENSEMBLE_ON_VALID_MASK].
        seen_class_names (`list[str]`): the training classes (synonyms comma separated). A class of another
            vocabulary is "seen" when one of its synonyms is a synonym of a training class.
        prompt_templates (`list[str]`): templates of the text classifier (ViLD's 14).
        trim_text_padding (`bool`): run the text tower only up to the longest prompt of a batch instead of the full
            context length (the same embeddings up to float rounding, several times faster); False reproduces the
            original's padded computation bit for bit.
        dominant_extra_names (`list[str]`): names appended to the dominant-category vocabulary (["other"]).
        class_weight / mask_weight / dice_weight (`float`): loss and matching weights [CLASS/MASK/DICE_WEIGHT].
        no_object_weight (`float`): [NO_OBJECT_WEIGHT].
        train_num_points (`int`), oversample_ratio (`float`), importance_sample_ratio (`float`): point sampling.
        deep_supervision (`bool`): loss on every prediction [DEEP_SUPERVISION].
        ignore_index (`int`): label of unlabelled pixels in `labels` maps [SEM_SEG_HEAD.IGNORE_VALUE].
        batch_invariant (`bool`): run each image at its own padded size, so that its outputs never depend on the
            other images of the batch (default). False batches the padded canvas as the original does.
        postprocess_order (`str`): "after" (resize the semantic map after the class x mask product, the original
            with SEMANTIC_ON only) or "before" (resize the masks first: the shipped eval config, which also enables
            panoptic and instance inference).
    """

    model_type = "ita"
    # Trainer's evaluation keeps only the loss and `logits` (the canvas class scores the metric needs).
    keys_to_ignore_at_inference = [
        "loss_dict", "semantic_maps", "class_queries_logits", "masks_queries_logits", "all_class_logits",
        "all_mask_logits", "out_vocab_logits", "pooled_clip_embeds", "mask_class_logits", "dominant_indices",
        "dominant_probs", "text_queries", "text_classifier", "image_sizes", "hidden_states", "mask_features",
        "multi_scale_features", "dominant_image_embeds", "original_sizes",
    ]
    sub_configs = {"vision_config": ConvNextConfig, "text_config": CLIPTextConfig}

    @property
    def _attn_implementation(self):
        return self._attn_implementation_internal

    @_attn_implementation.setter
    def _attn_implementation(self, value):
        # transformers sets a requested implementation on every sub-config, and ConvNextModel (no attention at all)
        # refuses any explicit one, "sdpa" included: the request applies to the text tower and the model, and the
        # trunk keeps its default (a no-op there).
        PretrainedConfig._attn_implementation.fset(self, value)
        vision = getattr(self, "vision_config", None)
        if vision is not None:
            vision._attn_implementation_internal = None

    def __init__(
        self,
        vision_config: dict | ConvNextConfig | None = None,
        text_config: dict | CLIPTextConfig | None = None,
        vision_head_hidden_size: int | None = None,
        logit_scale_init_value: float = 2.6592,
        clip_image_size: int = 320,
        clip_image_mean: list[float] = tuple(OPENAI_CLIP_MEAN),
        clip_image_std: list[float] = tuple(OPENAI_CLIP_STD),
        pixel_mean: list[float] = (122.7709383, 116.7460125, 104.09373615),
        pixel_std: list[float] = (68.5005327, 66.6321579, 70.32316305),
        size_divisibility: int = 32,
        min_size_test: int = 800,
        max_size_test: int = 1333,
        has_default_vocabulary: bool = False,
        feature_size: int = 256,
        mask_feature_size: int = 256,
        encoder_layers: int = 6,
        encoder_feedforward_dim: int = 1024,
        num_attention_heads: int = 8,
        common_stride: int = 4,
        hidden_dim: int = 256,
        dim_feedforward: int = 2048,
        decoder_layers: int = 10,
        pre_norm: bool = False,
        decoder_self_attention: bool = False,
        num_learned_queries: int = 180,
        num_text_queries: int = 20,
        dominant_crop_mode: str = "resize_center_crop",
        geometric_ensemble_alpha: float = 0.4,
        geometric_ensemble_beta: float = 0.8,
        ensemble_on_valid_mask: bool = False,
        seen_class_names: list[str] | None = None,
        prompt_templates: list[str] | None = None,
        trim_text_padding: bool = True,
        dominant_extra_names: list[str] = ("other",),
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        train_num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
        ignore_index: int = 255,
        batch_invariant: bool = True,
        postprocess_order: str = "after",
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = ConvNextConfig(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3], layer_norm_eps=1e-6)
        elif isinstance(vision_config, dict):
            from .validation import check_sub_config_dict

            check_sub_config_dict("ITAConfig.vision_config", vision_config)
            vision_config = ConvNextConfig(**vision_config)
        if text_config is None:
            text_config = CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=16, num_attention_heads=12,
                projection_dim=768, hidden_act="gelu", layer_norm_eps=1e-5, max_position_embeddings=77,
                vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
            )
        elif isinstance(text_config, dict):
            from .validation import check_sub_config_dict

            check_sub_config_dict("ITAConfig.text_config", text_config)
            text_config = CLIPTextConfig(**text_config)
        self.vision_config = vision_config
        self.text_config = text_config
        self.vision_head_hidden_size = vision_head_hidden_size
        self.logit_scale_init_value = logit_scale_init_value
        self.clip_image_size = clip_image_size
        self.clip_image_mean = list(clip_image_mean)
        self.clip_image_std = list(clip_image_std)
        self.pixel_mean = list(pixel_mean)
        self.pixel_std = list(pixel_std)
        self.size_divisibility = size_divisibility
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)
        self.has_default_vocabulary = bool(has_default_vocabulary)
        self.feature_size = feature_size
        self.mask_feature_size = mask_feature_size
        self.encoder_layers = encoder_layers
        self.encoder_feedforward_dim = encoder_feedforward_dim
        self.num_attention_heads = num_attention_heads
        self.common_stride = common_stride
        self.hidden_dim = hidden_dim
        self.dim_feedforward = dim_feedforward
        self.decoder_layers = decoder_layers
        self.pre_norm = pre_norm
        self.decoder_self_attention = bool(decoder_self_attention)
        self.num_learned_queries = num_learned_queries
        self.num_text_queries = num_text_queries
        self.dominant_crop_mode = dominant_crop_mode
        self.geometric_ensemble_alpha = float(geometric_ensemble_alpha)
        self.geometric_ensemble_beta = float(geometric_ensemble_beta)
        self.ensemble_on_valid_mask = ensemble_on_valid_mask
        self.seen_class_names = list(seen_class_names) if seen_class_names is not None else []
        self.prompt_templates = list(prompt_templates) if prompt_templates is not None else list(VILD_TEMPLATES)
        self.dominant_extra_names = list(dominant_extra_names)
        self.trim_text_padding = bool(trim_text_padding)
        self.class_weight = float(class_weight)
        self.mask_weight = float(mask_weight)
        self.dice_weight = float(dice_weight)
        self.no_object_weight = float(no_object_weight)
        self.train_num_points = train_num_points
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.deep_supervision = deep_supervision
        self.ignore_index = int(ignore_index)
        self.batch_invariant = batch_invariant
        self.postprocess_order = postprocess_order
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate()

    @property
    def projection_dim(self) -> int:
        """The CLIP embedding size (text and image)."""
        return self.text_config.projection_dim

    @property
    def head_hidden_size(self) -> int:
        return self.vision_head_hidden_size or 2 * self.projection_dim

    @property
    def uses_dominant_categories(self) -> bool:
        """Whether the model has ITA's dominant-category step (text queries); False for FC-CLIP."""
        return self.num_text_queries > 0

    @property
    def num_queries(self) -> int:
        """Queries with a full dominant-category vocabulary (text queries first, then learned queries)."""
        return self.num_text_queries + self.num_learned_queries

    def validate(self) -> None:
        """Raise a `ValueError` naming the first inconsistent setting."""
        from .validation import check_ita_sizes

        check_ita_sizes(self)
        if self.dominant_crop_mode not in DCU_CROP_MODES:
            raise ValueError(f"ITAConfig.dominant_crop_mode must be one of {list(DCU_CROP_MODES)}, got {self.dominant_crop_mode!r}")
        if self.postprocess_order not in POSTPROCESS_ORDERS:
            raise ValueError(f"ITAConfig.postprocess_order must be one of {list(POSTPROCESS_ORDERS)}, got {self.postprocess_order!r}")
        if self.min_size_test < 1 or self.max_size_test < self.min_size_test:
            raise ValueError(
                f"ITAConfig needs 1 <= min_size_test <= max_size_test, got {self.min_size_test} / {self.max_size_test}"
            )
        if self.decoder_layers < 1:
            raise ValueError("ITAConfig.decoder_layers (DEC_LAYERS) must be >= 1")
        if self.num_text_queries < 0 or self.num_learned_queries < 0 or self.num_queries < 1:
            raise ValueError("ITAConfig needs at least one query (num_text_queries + num_learned_queries >= 1)")
        if self.hidden_dim % self.num_attention_heads or self.feature_size % self.num_attention_heads:
            raise ValueError("hidden_dim and feature_size must be divisible by num_attention_heads")
        if self.feature_size % 32:
            raise ValueError(f"feature_size ({self.feature_size}) must be a multiple of 32 (GroupNorm with 32 groups)")
        if len(self.vision_config.hidden_sizes) != 4:
            raise ValueError("the ConvNeXt trunk must have 4 stages (res2..res5)")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("ITAConfig.prompt_templates must be a non-empty list of strings containing '{}'")

    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> ITAConfig:
        """Load a preset from the package's `configs/` (e.g. "ita_convnext_large_d_320") or from a JSON file."""
        return cls(**{**ita_preset_values(name_or_path), **overrides})


def ita_preset_values(name_or_path: str | os.PathLike) -> dict:
    """The config values an ITA preset sets (sub-configs as plain dicts): the place to merge overrides into."""
    path = str(name_or_path)
    if not os.path.isfile(path):
        path = os.path.join(PRESET_DIR, f"{path}.json")
        if not os.path.isfile(path):
            raise ValueError(f"unknown ITA preset {name_or_path!r}; available: {available_ita_presets()}")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    # `model_type` says which config class a preset is for (FC-CLIP's say "fcclip"); it is not a config value.
    values = {k: v for k, v in data.get("model", data).items() if not k.startswith("_") and k != "model_type"}
    source = values.pop("seen_class_names_from_preset", None)
    if source is not None and "seen_class_names" not in values:
        # One copy of a long class list (COCO panoptic's 133 classes with synonyms) serves several presets.
        values["seen_class_names"] = ita_preset_values(source)["seen_class_names"]
    return values


def available_ita_presets() -> list[str]:
    """Names of the ITA presets in `configs/` (files named ita_*.json)."""
    if not os.path.isdir(PRESET_DIR):
        return []
    return [f[:-5] for f in sorted(os.listdir(PRESET_DIR)) if f.startswith("ita_") and f.endswith(".json")]


def split_synonyms(name: str) -> list[str]:
    """The original's synonym split: "a, b,c" -> ["a", "b", "c"] (", " is first turned into ",")."""
    return name.replace(", ", ",").split(",")


__all__ = ["VILD_TEMPLATES", "ITAConfig", "available_ita_presets", "ita_preset_values", "split_synonyms"]
