"""Configuration of FGA-Seg (Fine-Grained Alignment for open-vocabulary segmentation) on a transformers CLIP."""

from __future__ import annotations

import json
import os

from transformers import CLIPConfig, PretrainedConfig

from .prompt_templates import resolve_templates


CLIP_FINETUNE_POLICIES = ("frozen", "attention", "full", "all")
DECODER_MODES = ("fast", "no_fast")
FUSION_MODES = ("cat", "add")
ATTENTION_TYPES = ("linear", "full")
LOSS_IGNORE_MODES = ("original", "masked")
TOP_K_SCOPES = ("image", "batch")

# The repository's `configs/` (linked into the package as `fgaseg_hf/configs`).
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# Intermediate CLIP blocks whose outputs guide the decoder, as the original chooses them per backbone.
_KNOWN_GUIDANCE_LAYERS = {12: [3, 7], 24: [7, 15]}


def default_guidance_layers(num_layers: int) -> list[int]:
    """Hooked vision blocks: the original's [3, 7] (ViT-B, 12 blocks) / [7, 15] (ViT-L, 24 blocks), else ~1/4 and ~2/3."""
    if num_layers in _KNOWN_GUIDANCE_LAYERS:
        return list(_KNOWN_GUIDANCE_LAYERS[num_layers])
    first = max(0, num_layers // 4)
    second = max(first, min(num_layers - 2, max(first + 1, (2 * num_layers) // 3 - 1)))
    return [first, second]


class FGASegConfig(PretrainedConfig):
    r"""
    Configuration of [`FGASegModel`]. Names of the original detectron2 config (``MODEL.SEM_SEG_HEAD.*``) are given in
    brackets; the converter maps them.

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            The CLIP backbone (both towers). Defaults to a ViT-B/16 sized `CLIPConfig`.
        text_guidance_dim (`int`, *optional*): [TEXT_GUIDANCE_DIM] defaults to the CLIP projection dim.
        text_guidance_proj_dim (`int`): [TEXT_GUIDANCE_PROJ_DIM].
        appearance_guidance_dim (`int`, *optional*): [APPEARANCE_GUIDANCE_DIM] defaults to the CLIP projection dim.
        appearance_guidance_proj_dim (`int`): [APPEARANCE_GUIDANCE_PROJ_DIM].
        decoder_dims (`list[int]`): [DECODER_DIMS] widths of the two upsampling stages.
        decoder_guidance_dims (`list[int]`): [DECODER_GUIDANCE_DIMS] output widths of the learned upsampling of the
            two hooked CLIP layers (the original hard-codes 256/128).
        decoder_guidance_proj_dims (`list[int]`): [DECODER_GUIDANCE_PROJ_DIMS].
        num_aggregation_layers (`int`): [NUM_LAYERS] spatial + class aggregation layers.
        num_attention_heads (`int`): [NUM_HEADS] heads of the Swin and class attentions.
        hidden_dim (`int`): [HIDDEN_DIMS] width of the cost embedding.
        pooling_size (`list[int]`): [POOLING_SIZES] average pooling before class attention.
        window_size (`int`): [WINDOW_SIZES] Swin window.
        class_attention_type (`str`): [ATTENTION_TYPE] "linear" or "full".
        decoder_mode (`str`): [DECODER_MOD] "fast" (auxiliary heads, top-k class pruning at inference) or "no_fast".
        fusion_mode (`str`): [FUSION_MOD] "cat" (concatenate + linear) or "add".
        p2t_num_layers (`int`): [P2T_LAYER] pixel-to-text cross-attention layers.
        p2t_num_heads (`int`): heads of the pixel-to-text attention (8 in the original).
        local_alignment_kernel_size (`int`): [KERNEL_SIZE] size of the text-generated kernels of the local cost.
        projector_kernel_size (`int`): kernel of the alignment projector (3, never configurable in the original).
        auxiliary_loss_weights (`list[float]`): weights of the three auxiliary terms of the fast decoder. The original
            ([LAMBDA_AUXI] = 0.2) weights only the first one: `[0.2, 1.0, 1.0]`.
        alignment_loss_weight (`float`): [LAMBDA_ALIGN].
        loss_ignore_mode (`str`): "original" counts ignore pixels as negatives for every class (the published
            training); "masked" leaves them out of every BCE term.
        guidance_layer_indexes (`list[int]`, *optional*): vision blocks whose outputs guide the decoder;
            defaults to the original's [3, 7] for 12 blocks and [7, 15] for 24.
        image_size (`int`, *optional*): CLIP input resolution; defaults to 24 patches (384 for /16, 336 for /14).
        class_aggregation_length (`int`): the original's `pad_len` (256): class attention always sees this many
            tokens (learned padding), and more classes are truncated to the most CLIP-similar ones. 0 disables both.
        inference_top_k (`int`): per-pixel top-k of the fast decoder's class pruning at inference (16).
        top_k_scope (`str`): "image" prunes per image (default; results never depend on the rest of the batch);
            "batch" pools the kept set over the batch as the original does.
        inference_chunk_size (`int`): without gradients, the Swin blocks and the upsampling decoder run over at most
            this many (image, class) maps at a time (256; 0: all at once). Bounds the memory of large vocabularies
            and of the sliding window's views; the results do not change.
        prompt_templates (`list[str]`): templates used to build prompts; the number of templates is the number of
            correlation channels (`num_templates`).
        ignore_index (`int`): label value ignored by the loss (255).
        clip_finetune (`str`): [CLIP_FINETUNE] which CLIP parameters train: "attention" (q and v projection weights
            of every block of both towers, as the original), "full" (every block of both towers, as the original),
            "all" (every CLIP parameter, e.g. to train from scratch) or "frozen".
        has_default_vocabulary (`bool`): whether the model carries a default vocabulary (`id2label`, its token ids
            and cached text embeddings) so that it runs without text input.
        default_vocabulary_token_length (`int`): token length of the stored default-vocabulary prompts.
        use_pixel_to_text_attention (`bool`): build FGA-Seg's pixel-to-text cross-attention (P2T); without it the
            CLIP text embeddings enter the cost volume unchanged (CAT-Seg).
        use_local_alignment (`bool`): build FGA-Seg's local (dynamic-kernel) cost and its three fusions with the
            global cost; without it the decoder sees the global cost only (CAT-Seg).
        use_alignment_projector (`bool`): build FGA-Seg's alignment projector and its loss term (absent in CAT-Seg).
    """

    model_type = "fgaseg"
    sub_configs = {"clip_config": CLIPConfig}
    # Trainer's evaluation and predict() keep only the loss and `logits` (Trainer reads this from the config; the
    # other outputs have no batch axis or are large).
    keys_to_ignore_at_inference = [
        "auxiliary_logits", "alignment_logits", "loss_terms", "kept_classes", "text_embeds", "refined_text_embeds",
        "image_embeds", "hidden_states", "attentions", "text_attentions", "correlation", "local_correlation",
        "original_sizes",
    ]

    def __init__(
        self,
        clip_config: dict | CLIPConfig | None = None,
        text_guidance_dim: int | None = None,
        text_guidance_proj_dim: int = 128,
        appearance_guidance_dim: int | None = None,
        appearance_guidance_proj_dim: int = 128,
        decoder_dims: list[int] = (64, 32),
        decoder_guidance_dims: list[int] = (256, 128),
        decoder_guidance_proj_dims: list[int] = (32, 16),
        num_aggregation_layers: int = 2,
        num_attention_heads: int = 4,
        hidden_dim: int = 128,
        pooling_size: list[int] = (2, 2),
        window_size: int = 12,
        class_attention_type: str = "linear",
        decoder_mode: str = "fast",
        fusion_mode: str = "cat",
        p2t_num_layers: int = 1,
        p2t_num_heads: int = 8,
        local_alignment_kernel_size: int = 3,
        projector_kernel_size: int = 3,
        auxiliary_loss_weights: list[float] = (0.2, 1.0, 1.0),
        alignment_loss_weight: float = 0.02,
        loss_ignore_mode: str = "original",
        guidance_layer_indexes: list[int] | None = None,
        image_size: int | None = None,
        class_aggregation_length: int = 256,
        inference_top_k: int = 16,
        top_k_scope: str = "image",
        inference_chunk_size: int = 256,
        prompt_templates: list[str] | None = None,
        ignore_index: int = 255,
        clip_finetune: str = "attention",
        has_default_vocabulary: bool = False,
        default_vocabulary_token_length: int = 77,
        initializer_range: float = 0.02,
        use_pixel_to_text_attention: bool = True,
        use_local_alignment: bool = True,
        use_alignment_projector: bool = True,
        **kwargs,
    ):
        if clip_config is None:
            clip_config = CLIPConfig()
        elif isinstance(clip_config, dict):
            from .validation import check_sub_config_dict

            check_sub_config_dict("FGASegConfig.clip_config", clip_config)
            clip_config = CLIPConfig(**clip_config)
        self.clip_config = clip_config
        self.text_guidance_dim = text_guidance_dim
        self.text_guidance_proj_dim = text_guidance_proj_dim
        self.appearance_guidance_dim = appearance_guidance_dim
        self.appearance_guidance_proj_dim = appearance_guidance_proj_dim
        self.decoder_dims = list(decoder_dims)
        self.decoder_guidance_dims = list(decoder_guidance_dims)
        self.decoder_guidance_proj_dims = list(decoder_guidance_proj_dims)
        self.num_aggregation_layers = num_aggregation_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_dim = hidden_dim
        self.pooling_size = list(pooling_size) if pooling_size is not None else None
        self.window_size = window_size
        self.class_attention_type = class_attention_type
        self.decoder_mode = decoder_mode
        self.fusion_mode = fusion_mode
        self.p2t_num_layers = p2t_num_layers
        self.p2t_num_heads = p2t_num_heads
        self.local_alignment_kernel_size = local_alignment_kernel_size
        self.projector_kernel_size = projector_kernel_size
        self.auxiliary_loss_weights = [float(w) for w in auxiliary_loss_weights]
        self.alignment_loss_weight = float(alignment_loss_weight)
        self.loss_ignore_mode = loss_ignore_mode
        self.guidance_layer_indexes = list(guidance_layer_indexes) if guidance_layer_indexes is not None else None
        self.image_size = image_size
        self.class_aggregation_length = class_aggregation_length
        self.inference_top_k = inference_top_k
        self.top_k_scope = top_k_scope
        self.inference_chunk_size = inference_chunk_size
        self.prompt_templates = resolve_templates(prompt_templates if prompt_templates is not None else "single")
        self.ignore_index = ignore_index
        self.clip_finetune = clip_finetune
        self.has_default_vocabulary = has_default_vocabulary
        self.default_vocabulary_token_length = default_vocabulary_token_length
        self.initializer_range = initializer_range
        self.use_pixel_to_text_attention = bool(use_pixel_to_text_attention)
        self.use_local_alignment = bool(use_local_alignment)
        self.use_alignment_projector = bool(use_alignment_projector)
        super().__init__(**kwargs)
        self.validate()

    # ----------------------------------------------------------------- derived values
    @property
    def projection_dim(self) -> int:
        return self.clip_config.projection_dim

    @property
    def vision_width(self) -> int:
        return self.clip_config.vision_config.hidden_size

    @property
    def patch_size(self) -> int:
        return self.clip_config.vision_config.patch_size

    @property
    def clip_resolution(self) -> int:
        """CLIP input size (square): 384 for ViT-B/16, 336 for ViT-L/14 (24 x 24 patches)."""
        return self.image_size if self.image_size is not None else 24 * self.patch_size

    @property
    def feature_resolution(self) -> int:
        """Side of the CLIP token grid at `clip_resolution` (the original's hard-coded 24)."""
        return self.clip_resolution // self.patch_size

    @property
    def output_resolution(self) -> int:
        """Side of the logit maps: 4 x the token grid."""
        return 4 * self.feature_resolution

    @property
    def guidance_layers(self) -> list[int]:
        if self.guidance_layer_indexes is not None:
            return list(self.guidance_layer_indexes)
        return default_guidance_layers(self.clip_config.vision_config.num_hidden_layers)

    @property
    def text_guidance_in_dim(self) -> int:
        return self.text_guidance_dim if self.text_guidance_dim is not None else self.projection_dim

    @property
    def appearance_guidance_in_dim(self) -> int:
        return self.appearance_guidance_dim if self.appearance_guidance_dim is not None else self.projection_dim

    @property
    def num_templates(self) -> int:
        return len(self.prompt_templates)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise a `ValueError` naming the first inconsistent setting."""
        from .validation import check_fgaseg_sizes

        check_fgaseg_sizes(self)

        def choice(name, value, allowed):
            if value not in allowed:
                raise ValueError(f"FGASegConfig.{name} must be one of {list(allowed)}, got {value!r}")

        choice("decoder_mode", self.decoder_mode, DECODER_MODES)
        choice("fusion_mode", self.fusion_mode, FUSION_MODES)
        choice("class_attention_type", self.class_attention_type, ATTENTION_TYPES)
        choice("clip_finetune", self.clip_finetune, CLIP_FINETUNE_POLICIES)
        choice("loss_ignore_mode", self.loss_ignore_mode, LOSS_IGNORE_MODES)
        choice("top_k_scope", self.top_k_scope, TOP_K_SCOPES)
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("FGASegConfig.prompt_templates must be a non-empty list of strings containing '{}'")
        if len(self.decoder_dims) != 2 or len(self.decoder_guidance_dims) != 2 or len(self.decoder_guidance_proj_dims) != 2:
            raise ValueError("decoder_dims, decoder_guidance_dims and decoder_guidance_proj_dims need two entries each")
        if self.use_local_alignment and self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (the second decoder stage uses hidden_dim / 2), got {self.hidden_dim}")
        if self.use_local_alignment and self.decoder_dims[0] != self.hidden_dim // 2:
            raise ValueError(
                f"decoder_dims[0] ({self.decoder_dims[0]}) must equal hidden_dim / 2 ({self.hidden_dim // 2}): "
                "the local cost is projected to hidden_dim / 2 before it is fused with the first decoder stage"
            )
        widths = [("decoder_dims[0]", self.decoder_dims[0]), ("decoder_dims[1]", self.decoder_dims[1])]
        if self.use_local_alignment:  # the local cost's own upsampling DoubleConv
            widths.append(("hidden_dim / 2", self.hidden_dim // 2))
        for name, width in widths:
            if width < 16 or width % 16:
                raise ValueError(f"{name} ({width}) must be a positive multiple of 16 (GroupNorm uses width / 16 groups)")
        if self.hidden_dim % self.num_attention_heads:
            raise ValueError("hidden_dim must be divisible by num_attention_heads")
        if self.use_pixel_to_text_attention and self.projection_dim % self.p2t_num_heads:
            raise ValueError(f"the CLIP projection dim ({self.projection_dim}) must be divisible by p2t_num_heads")
        if self.use_pixel_to_text_attention and self.projection_dim % 4:
            raise ValueError("the CLIP projection dim must be divisible by 4 (2-D sine position encoding)")
        if self.decoder_guidance_proj_dims[0] >= self.hidden_dim or self.decoder_guidance_proj_dims[1] >= self.decoder_dims[0]:
            raise ValueError("decoder_guidance_proj_dims must be smaller than the width of the stage they join")
        if self.clip_resolution % self.patch_size:
            raise ValueError(f"image_size {self.clip_resolution} is not a multiple of the patch size {self.patch_size}")
        grid = self.feature_resolution
        if self.pooling_size is not None and (grid % self.pooling_size[0] or grid % self.pooling_size[1]):
            raise ValueError(f"pooling_size {self.pooling_size} must divide the token grid {grid}")
        if grid > self.window_size and grid % self.window_size:
            raise ValueError(f"window_size {self.window_size} must divide the token grid {grid}")
        layers = self.clip_config.vision_config.num_hidden_layers
        hooks = self.guidance_layers
        if len(hooks) != 2 or not all(0 <= h < layers - 1 for h in hooks):
            raise ValueError(
                f"guidance_layer_indexes {hooks} must be two block indexes below the last vision block ({layers - 1}): "
                "the last block runs in dense mode"
            )
        if len(self.auxiliary_loss_weights) != 3:
            raise ValueError("auxiliary_loss_weights needs three entries (one per auxiliary head)")
        if self.inference_top_k < 1:
            raise ValueError("inference_top_k must be >= 1")
        if self.inference_chunk_size < 0:
            raise ValueError("inference_chunk_size must be >= 0 (0: every map at once)")
        if self.class_aggregation_length < 0:
            raise ValueError("class_aggregation_length must be >= 0 (0 disables padding and truncation)")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """As transformers reads a config; a plain CLIP folder (`model_type` "clip") reads as a new FGA-Seg with the
        default settings on that CLIP, so that `FGASegModel.from_pretrained(clip_folder)` (`base_model_prefix`
        "clip") loads the CLIP weights and initialises the rest."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "clip":
            wrapped = {"model_type": cls.model_type, "clip_config": config_dict}
            if "dtype" in config_dict:
                wrapped["dtype"] = config_dict["dtype"]
            config_dict = wrapped
        return config_dict, kwargs

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name_or_path: str | os.PathLike, **overrides) -> "FGASegConfig":
        """Load a preset from the package's `configs/` (e.g. "vitb_384_fast_cat") or from a JSON file path."""
        return cls(**{**preset_values(name_or_path), **overrides})


def preset_values(name_or_path: str | os.PathLike) -> dict:
    """The config values a preset sets (its "model" block, `clip_config` as a plain dict): the place to merge
    overrides into before building an `FGASegConfig`."""
    path = str(name_or_path)
    if not os.path.isfile(path):
        path = os.path.join(PRESET_DIR, f"{path}.json")
        if not os.path.isfile(path):
            raise ValueError(f"unknown FGA-Seg preset {name_or_path!r}; available: {available_presets()}")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return json.loads(json.dumps(data.get("model", data)))


def available_presets() -> list[str]:
    """Names of the model presets in `configs/` (a JSON with a "model" block)."""
    names = []
    for file in sorted(os.listdir(PRESET_DIR)) if os.path.isdir(PRESET_DIR) else []:
        if file.endswith(".json"):
            with open(os.path.join(PRESET_DIR, file), encoding="utf-8") as handle:
                if "model" in json.load(handle):
                    names.append(file[:-5])
    return names


__all__ = ["FGASegConfig", "available_presets", "preset_values"]
