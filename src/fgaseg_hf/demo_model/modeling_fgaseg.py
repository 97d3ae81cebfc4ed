"""FGA-Seg on a transformers `CLIPModel`.

Forward, in named steps (the original's module names in brackets):
1. dense CLIP image features and two intermediate vision blocks [FGASeg.forward, model_vpt forward_dense]
2. learned upsampling of the intermediate blocks into decoder guidance [upsample1, upsample2]
3. text embeddings of the prompts, or of the default vocabulary [get_text_embeds]
4. pixel-to-text cross-attention refines the text [P2Tformer / DCDT]
5. global cosine cost + local (dynamic-kernel) cost -> aggregation -> guided upsampling [Decoder_fast / Decoder]
6. training: BCE on final, auxiliary and projector (alignment) logits [FGASeg.forward, Projector]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.auto import modeling_auto
from transformers.utils import ModelOutput

from .configuration_fgaseg import FGASegConfig, preset_values
from .fgaseg_aggregation import ClassAggregation
from .fgaseg_alignment import AlignmentProjector, PixelTextCrossAttention
from .fgaseg_clip import dense_image_features, encode_prompts
from .fgaseg_decoder import PRUNED_LOGIT, CostAggregationDecoder
from .fgaseg_loss import FGASegLoss
from .modeling_common import ParameterPolicyMixin, recorded_attentions
from .validation import check_finite

logger = logging.getLogger(__name__)

# transformers' image-segmentation pipeline checks the model class against a static list of names and logs an
# error line for any other; naming this class there silences it. The entry's key is not a known config type, so the
# Auto classes never resolve through it.
modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("fgaseg", "FGASegModel")


@dataclass
class FGASegOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): total training loss, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_classes, 4 * grid, 4 * grid)`):
            per-class logits (sigmoid gives the probability). Classes pruned by the fast decoder's top-k selection
            at inference, or truncated beyond `class_aggregation_length`, hold -100.
        auxiliary_logits (`tuple(torch.FloatTensor)`, *optional*): the fast decoder's three auxiliary logit maps,
            `(batch_size, num_classes, grid, grid)` twice and `(batch_size, num_classes, 2 * grid, 2 * grid)`, on the
            unpruned path (training, or when `labels` are given).
        alignment_logits (`torch.FloatTensor` of shape `(batch_size, num_classes, 4 * grid, 4 * grid)`, *optional*):
            the alignment projector's per-class logits (computed when a loss is computed or when asked).
        loss_terms (`dict[str, torch.FloatTensor]`, *optional*): the unweighted loss terms.
        kept_classes (`torch.BoolTensor` of shape `(batch_size, num_classes)`): classes that survived pruning.
        text_embeds (`torch.FloatTensor` of shape `(num_classes, num_templates, projection_dim)`): normalised
            CLIP text embeddings used.
        refined_text_embeds (`torch.FloatTensor` of shape `(batch_size, num_classes, num_templates, projection_dim)`):
            text embeddings after the pixel-to-text attention.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim, grid, grid)`): dense CLIP features.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): every vision block output
            `(batch_size, 1 + grid * grid, width)` (the first is the block-0 input), when `output_hidden_states`
            (also readable as `vision_hidden_states`, its former name).
        attentions (`tuple(torch.FloatTensor)`, *optional*): attention weights `(batch_size, heads, 1 + grid * grid,
            1 + grid * grid)` of every vision block but the dense last one (it does not attend), when
            `output_attentions`.
        text_attentions (`tuple(torch.FloatTensor)`, *optional*): attention weights `(num_prompts, heads, length,
            length)` of every text block, when `output_attentions` and the text tower ran in this call (not with
            `text_embeds` nor with the cached default vocabulary).
        correlation (`torch.FloatTensor`, *optional*): global cosine cost `(batch_size, num_templates, T, grid, grid)`.
        local_correlation (`torch.FloatTensor`, *optional*): local cost, same shape.
        original_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*): the `original_sizes` given to
            `forward`, unchanged: the default `target_sizes` of the image processor's post-processing.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    auxiliary_logits: tuple[torch.FloatTensor, ...] | None = None
    alignment_logits: torch.FloatTensor | None = None
    loss_terms: dict | None = None
    kept_classes: torch.BoolTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    refined_text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    correlation: torch.FloatTensor | None = None
    local_correlation: torch.FloatTensor | None = None
    original_sizes: torch.LongTensor | None = None

    @property
    def vision_hidden_states(self) -> tuple[torch.FloatTensor, ...] | None:
        """The former name of `hidden_states`."""
        return self.hidden_states


def trainable_clip_parameter(name: str, policy: str, last_vision_layer: int) -> bool:
    """Whether a `CLIPModel` parameter trains under a fine-tuning policy.

    "attention" and "full" follow the original, which only ever unfreezes parameters of the transformer blocks:
    the q and v projection weights (not their biases) for "attention", every block parameter for "full".
    Parameters that never reach the output stay frozen under every policy: the query/key projections of the
    dense last vision block (it does not attend) and CLIP's logit scale (FGA-Seg has no use for it).
    """
    last_block = f"vision_model.encoder.layers.{last_vision_layer}.self_attn."
    if name == "logit_scale" or name.startswith((last_block + "q_proj.", last_block + "k_proj.")):
        return False
    if policy == "all":
        return True
    if policy == "frozen":
        return False
    in_block = ".encoder.layers." in name
    if policy == "full":
        return in_block
    return in_block and (name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.v_proj.weight"))


def text_tower_fingerprint(clip: CLIPModel) -> int:
    """A cheap signature of the text tower's weights: a fixed weighted sum of strided samples of every tensor."""
    total = 0.0
    names = ("text_model.", "text_projection.")
    for index, (name, param) in enumerate(clip.named_parameters()):
        if not name.startswith(names):
            continue
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // 512)
        sample = flat[::step].double()
        weights = torch.sin(torch.arange(sample.numel(), dtype=torch.float64, device=sample.device) * 0.7 + index)
        total += float((sample * weights).sum()) + 1e-3 * float(param.detach().double().abs().sum())
    packed = torch.tensor([total], dtype=torch.float64).view(torch.int64)
    return int(packed.item())


class FGASegPreTrainedModel(ParameterPolicyMixin, PreTrainedModel):
    config_class = FGASegConfig
    config: FGASegConfig
    base_model_prefix = "clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer"]
    # The loss is a per-batch mean: Trainer must keep dividing it by the accumulation steps.
    accepts_loss_kwargs = False
    # What Trainer gathers at evaluation: `FGASegConfig.keys_to_ignore_at_inference` (Trainer reads the config).
    # Parameters trained at `backbone_lr_multiplier` times the learning rate (the original's CLIP_MULTIPLIER).
    backbone_parameter_prefixes = ("clip.",)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, PixelTextCrossAttention):
            init.constant_(module.gamma, 0.1)
        elif isinstance(module, ClassAggregation):
            if module.padding_token is not None:
                init.zeros_(module.padding_token)
            if module.padding_guidance is not None:
                init.zeros_(module.padding_guidance)
        elif isinstance(module, FGASegModel) and module.default_input_ids is not None:
            init.zeros_(module.default_text_embeds)
            init.zeros_(module.default_text_fingerprint)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does; with remote code, the folder also carries the open-vocabulary-segmentation
        pipeline and maps AutoModelForSemanticSegmentation (see `add_pipelines_to_saved_model`)."""
        from .pipeline_fgaseg import add_pipelines_to_saved_model

        super().save_pretrained(save_directory, *args, **kwargs)
        add_pipelines_to_saved_model(save_directory)


class FGASegModel(FGASegPreTrainedModel):
    """FGA-Seg: open-vocabulary semantic segmentation from a CLIP cost volume (see the module docstring)."""

    def __init__(self, config: FGASegConfig):
        super().__init__(config)
        config.validate()
        self.clip = CLIPModel(config.clip_config)
        width, dim = config.vision_width, config.projection_dim
        self.guidance_upsample1 = nn.ConvTranspose2d(width, config.decoder_guidance_dims[0], kernel_size=2, stride=2)
        self.guidance_upsample2 = nn.ConvTranspose2d(width, config.decoder_guidance_dims[1], kernel_size=4, stride=4)
        # CAT-Seg (`CATSegConfig`) switches these two FGA-Seg additions off: the attributes are then None.
        self.pixel_text_attention = (
            PixelTextCrossAttention(dim, config.p2t_num_heads, config.p2t_num_layers)
            if config.use_pixel_to_text_attention
            else None
        )
        self.alignment_projector = (
            AlignmentProjector(dim, config.projector_kernel_size) if config.use_alignment_projector else None
        )
        self.decoder = CostAggregationDecoder(config)
        self.criterion = FGASegLoss(config)
        self._register_default_vocabulary_buffers(
            len(config.id2label) if config.has_default_vocabulary else 0, config.default_vocabulary_token_length
        )
        self._verified_text_state = None
        self.post_init()
        self.apply_finetune_policy()

    @classmethod
    def from_clip_pretrained(cls, clip_name_or_path: str, preset: str | None = "vitb_384_fast_cat", **overrides) -> "FGASegModel":
        """A new FGA-Seg (randomly initialised head) on pretrained CLIP weights, e.g.
        `FGASegModel.from_clip_pretrained("openai/clip-vit-base-patch16", "vitb_384_fast_cat")`.
        The preset's CLIP architecture is replaced by the checkpoint's."""
        clip = CLIPModel.from_pretrained(clip_name_or_path)
        base = preset_values(preset) if preset else {}
        base.pop("clip_config", None)
        base.update(overrides)
        config = cls.config_class(clip_config=clip.config.to_dict(), **base)
        model = cls(config)
        missing, unexpected = model.clip.load_state_dict(clip.state_dict(), strict=False)
        if unexpected or [k for k in missing if not k.endswith("position_ids")]:
            raise ValueError(f"{clip_name_or_path} is not a CLIPModel checkpoint (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model

    # ----------------------------------------------------------------- fine-tuning policy
    def apply_parameter_policy(self) -> None:
        """Re-applied after `from_pretrained` (see `ParameterPolicyMixin`): the config's CLIP fine-tuning policy."""
        self.apply_finetune_policy()

    def _recorded_attentions(self, tower: str, wanted: bool):
        """Collect the attention weights of a CLIP tower ("vision": every block but the dense last one)."""
        model = self.clip.vision_model if tower == "vision" else self.clip.text_model
        layers = list(model.encoder.layers)[:-1] if tower == "vision" else list(model.encoder.layers)
        return recorded_attentions(model.config, [layer.self_attn for layer in layers], wanted)

    def apply_finetune_policy(self, policy: str | None = None) -> None:
        """Set `requires_grad` of the CLIP parameters by `config.clip_finetune` (or `policy`); the head always trains."""
        policy = policy or self.config.clip_finetune
        if policy != self.config.clip_finetune:
            self.config.clip_finetune = policy
            self.config.validate()
        last = self.config.clip_config.vision_config.num_hidden_layers - 1
        for name, param in self.clip.named_parameters():
            param.requires_grad_(trainable_clip_parameter(name, policy, last))
        for name, param in self.named_parameters():
            if not name.startswith("clip."):
                param.requires_grad_(True)

    def set_pooling_size(self, pooling_size: list[int] | tuple[int, int] | None) -> None:
        """Change the class attention's average pooling (parameter-free). The original trains with `[2, 2]` and
        evaluates every benchmark with `[1, 1]` (`eval.sh` overrides `POOLING_SIZES`)."""
        self.config.pooling_size = list(pooling_size) if pooling_size is not None else None
        self.config.validate()
        for module in self.modules():
            if isinstance(module, ClassAggregation):
                module.pooling_size = tuple(pooling_size) if pooling_size is not None else None

    # ----------------------------------------------------------------- default vocabulary
    def _register_default_vocabulary_buffers(self, num_classes: int, length: int) -> None:
        names = ("default_input_ids", "default_text_embeds", "default_text_fingerprint")
        for name in names:
            self._buffers.pop(name, None)
            self.__dict__.pop(name, None)
        if num_classes == 0:
            for name in names:
                self.register_buffer(name, None)
            return
        templates, dim = self.config.num_templates, self.config.projection_dim
        self.register_buffer("default_input_ids", torch.zeros(num_classes * templates, length, dtype=torch.long))
        self.register_buffer("default_text_embeds", torch.zeros(num_classes, templates, dim))
        self.register_buffer("default_text_fingerprint", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def set_default_vocabulary(self, class_names: list[str], input_ids: torch.Tensor) -> None:
        """Store class names (as `config.id2label`), their prompt token ids and cached text embeddings in the model,
        so that `forward` runs without text input. `input_ids` are laid out as for `forward`."""
        names = [str(n) for n in class_names]
        if not names:
            raise ValueError("the default vocabulary must contain at least one class name")
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate class names in the default vocabulary: {duplicates}")
        input_ids = self._check_input_ids(input_ids)
        if input_ids.shape[0] != len(names) * self.config.num_templates:
            raise ValueError(
                f"input_ids has {input_ids.shape[0]} rows but {len(names)} classes x {self.config.num_templates} "
                "templates were expected"
            )
        device = self.clip.text_projection.weight.device
        self._register_default_vocabulary_buffers(len(names), input_ids.shape[1])
        self.default_input_ids = self.default_input_ids.to(device)
        self.default_input_ids.copy_(input_ids)
        self.default_text_embeds = self.default_text_embeds.to(device=device, dtype=self.clip.text_projection.weight.dtype)
        self.default_text_fingerprint = self.default_text_fingerprint.to(device)
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {n: i for i, n in enumerate(names)}
        self.config.has_default_vocabulary = True
        self.config.default_vocabulary_token_length = int(input_ids.shape[1])
        self._refresh_default_cache()

    @torch.no_grad()
    def _refresh_default_cache(self) -> None:
        was_training = self.clip.training
        self.clip.eval()
        embeds = self.get_text_embeddings(self.default_input_ids)
        self.clip.train(was_training)
        self.default_text_embeds.copy_(embeds)
        self.default_text_fingerprint.fill_(text_tower_fingerprint(self.clip))
        self._verified_text_state = self._text_tower_state()

    def _text_tower_state(self):
        return tuple(
            (p.data_ptr(), p._version, p.dtype)
            for n, p in self.clip.named_parameters()
            if n.startswith(("text_model.", "text_projection."))
        )

    def default_text_embeddings(self) -> torch.Tensor:
        """Text embeddings of the default vocabulary; recomputed (never used stale) when the text tower changed."""
        if self.default_input_ids is None:
            raise ValueError(
                "no vocabulary: pass input_ids (prompts tokenised by FGASegProcessor) or text_embeds, or give the "
                "model a default vocabulary with set_default_vocabulary()"
            )
        if self.training and any(p.requires_grad for p in self.clip.text_model.parameters()):
            return self.get_text_embeddings(self.default_input_ids)
        state = self._text_tower_state()
        if state != self._verified_text_state:
            if int(self.default_text_fingerprint.item()) != text_tower_fingerprint(self.clip):
                logger.info("default-vocabulary text embeddings were computed from other weights: recomputing them")
                self._refresh_default_cache()
            self._verified_text_state = state
        return self.default_text_embeds

    # ----------------------------------------------------------------- text
    def _check_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Validate prompt ids and return them class-major 2-D: `(num_classes * num_templates, sequence_length)`."""
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        templates = self.config.num_templates
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.dim() not in (2, 3):
            raise ValueError(
                "input_ids must be an integer tensor of shape (num_classes, num_templates, sequence_length) or "
                f"(num_classes * num_templates, sequence_length), got dtype {input_ids.dtype} and shape "
                f"{tuple(input_ids.shape)}"
            )
        if input_ids.dim() == 3:
            if input_ids.shape[1] != templates:
                raise ValueError(
                    f"input_ids holds {input_ids.shape[1]} prompt templates per class but this model was built for "
                    f"{templates} (config.prompt_templates); tokenise with the model's templates"
                )
            input_ids = input_ids.flatten(0, 1)
        rows = input_ids.shape[0]
        if rows == 0 or rows % templates:
            raise ValueError(
                f"input_ids has {rows} rows, which is not a positive multiple of the number of prompt templates "
                f"({templates}): row c * {templates} + t must hold class c in template t"
            )
        vocab = self.config.clip_config.text_config.vocab_size
        # The value check needs a host sync: eager runs make it, compiled graphs stay whole.
        if not torch.compiler.is_compiling() and bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            raise ValueError(
                f"input_ids contain token ids outside the text tower's vocabulary [0, {vocab}): the tokenizer does "
                "not belong to this model"
            )
        return input_ids

    def get_text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised CLIP text embeddings `(num_classes, num_templates, projection_dim)` of class-major prompts."""
        input_ids = self._check_input_ids(input_ids).to(self.clip.text_projection.weight.device)
        if attention_mask is not None:
            attention_mask = attention_mask.reshape(input_ids.shape).to(input_ids.device)
        features = encode_prompts(self.clip, input_ids, attention_mask)
        return features.view(-1, self.config.num_templates, features.shape[-1])

    @torch.no_grad()
    def encode_vocabulary(self, tokenizer, class_names: list[str], templates=None) -> dict:
        """The text side of a vocabulary, computed once and passed to `forward` as `**encoded` by pipelines and
        `fgaseg evaluate`: `{"text_embeds": (num_classes, num_templates, projection_dim)}`. `templates`: default the
        config's (their number must be the model's)."""
        from .processing_fgaseg import tokenize_vocabulary

        templates = templates if templates is not None else self.config.prompt_templates
        input_ids = tokenize_vocabulary(tokenizer, class_names, templates)["input_ids"]
        return {"text_embeds": self.get_text_embeddings(input_ids)}

    # ----------------------------------------------------------------- checks
    def _check_pixel_values(self, pixel_values) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        size = self.config.clip_resolution
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[2:]) != (size, size):
            raise ValueError(
                f"pixel_values must have shape (batch_size, 3, {size}, {size}) (CLIP-normalised RGB at the model's "
                f"resolution; use FGASegImageProcessor), got {tuple(pixel_values.shape)}"
            )
        if not pixel_values.dtype.is_floating_point:
            raise ValueError(f"pixel_values must be a floating-point tensor (CLIP-normalised), got {pixel_values.dtype}")
        check_finite([("pixel_values", pixel_values)])

    def _check_labels(self, labels, batch: int, num_classes: int) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 3 or labels.shape[0] != batch:
            raise ValueError(
                f"labels must be an integer tensor of shape ({batch}, height, width), got dtype {labels.dtype} and "
                f"shape {tuple(labels.shape)}"
            )
        labels = labels.long()
        if torch.compiler.is_compiling():
            return labels  # as for input_ids: the value check is eager-only
        bad = (labels != self.config.ignore_index) & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            values = sorted(set(labels[bad].unique().tolist()))[:10]
            raise ValueError(
                f"labels contain class ids {values} outside [0, {num_classes}) that are not the ignore index "
                f"{self.config.ignore_index}"
            )
        return labels

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        output_alignment_logits: bool | None = None,
        output_hidden_states: bool | None = None,
        output_correlations: bool = False,
        pruning_groups: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
    ) -> FGASegOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, size, size)`): CLIP-normalised images at
                `config.clip_resolution`.
            input_ids (`torch.LongTensor` of shape `(num_classes, num_templates, sequence_length)`, *optional*):
                tokenised prompts (`FGASegProcessor` makes them); the flat class-major layout
                `(num_classes * num_templates, sequence_length)` (row `c * num_templates + t`) is accepted too.
            attention_mask (`torch.LongTensor`, *optional*): mask of `input_ids` (the text tower is causal, so it
                does not change the end-of-text features).
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*): class ids, with
                `config.ignore_index` for unlabelled pixels. Given labels, the unpruned path runs and a loss is
                computed, also in eval mode.
            text_embeds (`torch.FloatTensor` of shape `(num_classes, num_templates, projection_dim)`, *optional*):
                precomputed normalised text embeddings (from `get_text_embeddings`), instead of `input_ids`.
            output_alignment_logits (`bool`, *optional*): also compute the alignment projector's logits at inference.
            pruning_groups (`torch.LongTensor` of shape `(batch_size,)`, *optional*): images with the same id share
                the fast decoder's top-k class pruning (the views of one image in sliding-window inference, which
                `FGASegImageProcessor` returns). Default: `config.top_k_scope`.
            output_hidden_states (`bool`, *optional*): return the vision tower's block outputs (`hidden_states`).
            output_attentions (`bool`, *optional*): return the CLIP towers' attention weights (`attentions`,
                `text_attentions`); the towers then run eager attention for this call. The aggregation's window and
                class attentions are not returned (see docs/transformers_conventions.md).
            original_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*): each input image's `(H, W)`,
                as `FGASegImageProcessor` returns it (one row per image, also with the sliding window's views);
                copied to the output, unused by the model.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        self._check_pixel_values(pixel_values)
        text_attentions = None
        if text_embeds is None:
            if input_ids is not None:
                with self._recorded_attentions("text", output_attentions) as text_attentions:
                    text_embeds = self.get_text_embeddings(input_ids, attention_mask)
            else:
                text_embeds = self.default_text_embeddings()
        elif text_embeds.dim() != 3 or text_embeds.shape[1:] != (self.config.num_templates, self.config.projection_dim):
            raise ValueError(
                f"text_embeds must have shape (num_classes, {self.config.num_templates}, {self.config.projection_dim}), "
                f"got {tuple(text_embeds.shape)}"
            )
        batch, num_classes = pixel_values.shape[0], text_embeds.shape[0]
        if labels is not None:
            labels = self._check_labels(labels, batch, num_classes)

        dtype = self.clip.visual_projection.weight.dtype
        with self._recorded_attentions("vision", output_attentions) as vision_attentions:
            dense, hooked, hidden_states = dense_image_features(
                self.clip, pixel_values.to(dtype), self.config.guidance_layers, output_hidden_states
            )
        grid = self.config.feature_resolution
        to_map = lambda tokens: tokens[:, 1:].transpose(1, 2).unflatten(2, (grid, grid))  # noqa: E731
        image_features = to_map(dense)
        guidance = [image_features, self.guidance_upsample1(to_map(hooked[0])), self.guidance_upsample2(to_map(hooked[1]))]

        text_embeds = text_embeds.to(image_features.dtype)
        if self.pixel_text_attention is not None:
            refined = self.pixel_text_attention(image_features, text_embeds)
        else:
            refined = text_embeds[None].expand(batch, -1, -1, -1)

        want_loss = labels is not None
        alignment_logits = None
        wants_alignment = want_loss or output_alignment_logits or (self.training and output_alignment_logits is None)
        if wants_alignment and self.alignment_projector is not None:
            alignment_logits = self.alignment_projector(image_features, refined.mean(dim=2))

        prune = not self.training and not want_loss
        if pruning_groups is not None:
            pruning_groups = torch.as_tensor(pruning_groups, device=image_features.device).long()
            if pruning_groups.shape != (batch,) or bool((pruning_groups < 0).any()):
                raise ValueError(
                    f"pruning_groups must hold one non-negative group id per image, shape ({batch},), got "
                    f"{tuple(pruning_groups.shape)}"
                )
        decoded = self.decoder(
            image_features, refined, guidance, prune=prune, output_correlations=output_correlations,
            pruning_groups=pruning_groups,
        )

        loss, loss_terms = None, None
        if want_loss:
            loss, loss_terms = self.criterion(decoded.logits, decoded.auxiliary_logits, alignment_logits, labels)

        output = FGASegOutput(
            loss=loss,
            logits=decoded.logits,
            auxiliary_logits=decoded.auxiliary_logits,
            alignment_logits=alignment_logits,
            loss_terms=loss_terms,
            kept_classes=decoded.kept_classes,
            text_embeds=text_embeds,
            refined_text_embeds=refined if self.pixel_text_attention is not None else None,
            image_embeds=image_features,
            hidden_states=hidden_states,
            attentions=tuple(vision_attentions) if vision_attentions is not None else None,
            text_attentions=tuple(text_attentions) if text_attentions else None,
            correlation=decoded.correlation,
            local_correlation=decoded.local_correlation,
            original_sizes=original_sizes,
        )
        return output if return_dict else output.to_tuple()


__all__ = ["FGASegModel", "FGASegOutput", "FGASegPreTrainedModel", "PRUNED_LOGIT"]
