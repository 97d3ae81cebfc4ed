"""ITA (Image-Text Aggregation for open-vocabulary segmentation): FC-CLIP with dominant-category text queries.

Forward, in named steps (the original's names in brackets):
1. text classifier: every synonym in every prompt template through the frozen CLIP text tower, averaged over
   templates, void embedding appended [FCCLIP.get_text_classifier]
2. dominant categories: the whole image through CLIP against the bare-name vocabulary (+ "other"); the top
   `num_text_queries` names, projected, become the first decoder queries [CLIP.forward, add_tgt / add_tgt_em]
3. frozen ConvNeXt trunk features (res2..res5) [extract_features_convnext]
4. Mask2Former's deformable pixel decoder [MSDeformAttnPixelDecoder]
5. masked-attention decoder without self-attention; FC-CLIP class head [MultiScaleMaskedTransformerDecoder]
6. inference: mask-pooled dense CLIP features classified by CLIP, geometric ensemble, semantic maps
   [FCCLIP.forward, semantic_inference]; training: Hungarian matching + CE / BCE / dice [SetCriterion]

Text inputs, per vocabulary of K classes with S synonyms in total:
* `input_ids` (S * num_templates, L): prompt rows synonym-major (row s * num_templates + t is synonym s in
  template t), with `synonym_to_class` (S,) giving each synonym's class id in [0, K).
* `dominant_input_ids` (V, L): the dominant-category vocabulary (bare names; by convention the synonyms then
  "other"). `dominant_indices` (B, T) may give the chosen rows directly (training from precomputed lists).
`build_text_inputs` makes all of these from class names and a CLIP tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.models.auto import modeling_auto
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    Mask2FormerPixelDecoder,
)
from transformers.utils import ModelOutput

from .configuration_ita import ITAConfig
from .ita_batching import merge_groups
from .image_processing_ita import semantic_to_mask_targets
from .ita_clip import ITACLIP, clip_crop
from .ita_decoder import (
    ITATransformerDecoder,
    classification_logits,
    mask2former_config,
    mask_pooling,
    synonym_gather_index,
)
from .ita_inference import (
    canvas_scores,
    crop_and_resize,
    final_maps,
    geometric_ensemble,
)
from .modeling_common import ParameterPolicyMixin
from .processing_ita import tokenize_ita_vocabulary, vocabulary_layout
from .prompt_templates import check_class_names
from .validation import check_finite

# transformers' image-segmentation pipeline checks the model class against a static list of names and logs an error
# line for any other; naming this class there silences it (the key is not a config type the Auto classes resolve).
modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("ita", "ITAModel")


@dataclass
class ITAOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): weighted sum of `loss_dict`, when labels are given.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*): weighted terms, FC-CLIP names (`loss_ce`, `loss_mask`,
            `loss_dice`, then `_0`, `_1`, ... for the earlier predictions, first one first).
        logits (`torch.FloatTensor` of shape `(batch_size, num_classes, height, width)`): class scores on the padded
            input canvas (class probabilities x mask probabilities summed over queries); crop to the image size.
            None in training mode.
        semantic_maps (`list[torch.FloatTensor]`, *optional*): per image `(num_classes, h, w)` at `target_sizes`,
            in the configured post-processing order.
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_classes + 1)`): final
            decoder (in-vocabulary) class logits, void last. num_queries = T text queries + learned queries.
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, height / 4, width / 4)`).
        all_class_logits / all_mask_logits (`tuple(torch.FloatTensor)`): every prediction, the one on the
            initial queries first and the final one last.
        out_vocab_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_classes + 1)`): CLIP logits of
            the mask-pooled dense features, void last (inference only).
        pooled_clip_embeds (`torch.FloatTensor` of shape `(batch_size, num_queries, projection_dim)`).
        mask_class_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_classes + 1)`): ensembled
            log-probabilities used for the semantic maps (inference only).
        dominant_indices (`torch.LongTensor` of shape `(batch_size, T)`): chosen rows of the dominant vocabulary,
            most probable first.
        dominant_probs (`torch.FloatTensor` of shape `(batch_size, V)`): CLIP probabilities over that vocabulary.
        text_queries (`torch.FloatTensor` of shape `(batch_size, T, hidden_dim)`): projected dominant categories.
        text_classifier (`torch.FloatTensor` of shape `(num_synonyms + 1, projection_dim)`): void last.
        image_sizes (`list[tuple[int, int]]`): valid size of each image on the canvas.
        original_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*): `forward`'s, unchanged.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the vision tower's (ConvNeXt trunk's) stem, res2,
            res3, res4 and res5 (also readable as `backbone_hidden_states`, its former name).
        mask_features (`torch.FloatTensor`, *optional*): pixel decoder output `(batch_size, mask_dim, H/4, W/4)`.
        multi_scale_features (`tuple(torch.FloatTensor)`, *optional*): pixel decoder levels 1/32, 1/16, 1/8.
        dominant_image_embeds (`torch.FloatTensor`, *optional*): normalised CLIP embeddings of the whole-image crops.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    semantic_maps: list | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    all_class_logits: tuple | None = None
    all_mask_logits: tuple | None = None
    out_vocab_logits: torch.FloatTensor | None = None
    pooled_clip_embeds: torch.FloatTensor | None = None
    mask_class_logits: torch.FloatTensor | None = None
    dominant_indices: torch.LongTensor | None = None
    dominant_probs: torch.FloatTensor | None = None
    text_queries: torch.FloatTensor | None = None
    text_classifier: torch.FloatTensor | None = None
    image_sizes: list | None = None
    original_sizes: torch.LongTensor | None = None
    hidden_states: tuple | None = None
    mask_features: torch.FloatTensor | None = None
    multi_scale_features: tuple | None = None
    dominant_image_embeds: torch.FloatTensor | None = None

    @property
    def backbone_hidden_states(self) -> tuple | None:
        """The former name of `hidden_states`."""
        return self.hidden_states


# Output fields holding per-image tensors: merged over batch-invariant groups; mask logits are edge-padded so that
# bilinear resampling near a group's canvas border is unchanged.
_BATCHED = (
    "logits", "class_queries_logits", "masks_queries_logits", "all_class_logits", "all_mask_logits", "out_vocab_logits",
    "pooled_clip_embeds", "mask_class_logits", "dominant_indices", "dominant_probs", "text_queries",
    "hidden_states", "mask_features", "multi_scale_features", "dominant_image_embeds",
)
_EDGE_PADDED = ("masks_queries_logits", "all_mask_logits")


class ITAPreTrainedModel(ParameterPolicyMixin, PreTrainedModel):
    config_class = ITAConfig
    config: ITAConfig
    base_model_prefix = "ita"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    # The masked-attention decoder layers are transformers' GradientCheckpointingLayer (the frozen CLIP runs in eval).
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The loss is a per-batch mean: Trainer must keep dividing it by the accumulation steps.
    accepts_loss_kwargs = False
    # Parameters trained at the backbone learning-rate multiplier: the original's add_tgt_em sits inside its
    # backbone module, so its optimiser gives it BACKBONE_MULTIPLIER x the rate (the CLIP itself is frozen).
    backbone_parameter_prefixes = ("clip.", "dominant_projection")
    # The original's add_tgt_em is an nn.Embedding, which its optimiser leaves without weight decay.
    no_weight_decay_parameters = ("dominant_projection",)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, Mask2FormerPixelDecoder):
            init.normal_(module.level_embed, mean=0.0, std=1.0)
        elif isinstance(module, ITATransformerDecoder):
            init.constant_(module.logit_scale, 2.6592)
        elif isinstance(module, ITACLIP):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, ITAModel) and module.dominant_projection is not None:
            init.normal_(module.dominant_projection, mean=0.0, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does; with remote code, the folder also carries the open-vocabulary-segmentation
        pipeline and maps AutoModelForSemanticSegmentation (see `add_pipelines_to_saved_model`)."""
        from .pipeline_fgaseg import add_pipelines_to_saved_model

        super().save_pretrained(save_directory, *args, **kwargs)
        add_pipelines_to_saved_model(save_directory)


class ITAModel(ITAPreTrainedModel):
    """ITA: FC-CLIP mask classification with dominant-category text queries (see the module docstring)."""

    def __init__(self, config: ITAConfig):
        super().__init__(config)
        config.validate()
        self.clip = ITACLIP(config)
        self.pixel_decoder = Mask2FormerPixelDecoder(mask2former_config(config), feature_channels=list(config.vision_config.hidden_sizes))
        self.decoder = ITATransformerDecoder(config)
        # The original's add_tgt_em, used only as a bias-free (projection_dim, hidden_dim) matrix; absent without
        # text queries (FC-CLIP).
        if config.uses_dominant_categories:
            self.dominant_projection = nn.Parameter(torch.empty(config.projection_dim, config.hidden_dim))
        else:
            self.register_parameter("dominant_projection", None)
        self.void_embedding = nn.Embedding(1, config.projection_dim)
        self._criteria: dict = {}
        self._register_default_vocabulary_buffers()
        self.post_init()
        self.freeze_clip()

    # ----------------------------------------------------------------- setup
    def apply_parameter_policy(self) -> None:
        """Re-applied after `from_pretrained` (see `ParameterPolicyMixin`): the CLIP stays frozen."""
        self.freeze_clip()

    def freeze_clip(self) -> None:
        """CLIP is frozen in ITA (both towers and its logit scale)."""
        for param in self.clip.parameters():
            param.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        # The frozen CLIP always runs in eval mode (no drop path), as in the original.
        self.clip.eval()
        return self

    def criterion(self, num_classes: int) -> Mask2FormerLoss:
        """transformers' Mask2Former matcher + loss for a vocabulary of `num_classes` (its no-object weight vector
        depends on it)."""
        if num_classes not in self._criteria:
            c = self.config
            settings = SimpleNamespace(
                num_labels=num_classes, no_object_weight=c.no_object_weight, train_num_points=c.train_num_points,
                oversample_ratio=c.oversample_ratio, importance_sample_ratio=c.importance_sample_ratio,
                class_weight=c.class_weight, dice_weight=c.dice_weight, mask_weight=c.mask_weight,
            )
            self._criteria[num_classes] = Mask2FormerLoss(settings, weight_dict={})
        return self._criteria[num_classes].to(self.device)

    # ----------------------------------------------------------------- text
    def text_classifier(
        self, input_ids=None, attention_mask=None, synonym_to_class=None, text_embeds=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S + 1, D) normalised synonym embeddings (template-averaged, void last) and the (S,) class index."""
        if text_embeds is None:
            if input_ids is None:
                raise ValueError(
                    "ITAModel needs `input_ids` (templated class prompts, e.g. from ITAProcessor) or `text_embeds`, or "
                    "a default vocabulary (set_default_vocabulary)"
                )
            embeds = F.normalize(self.clip.text_embeddings(input_ids, attention_mask), dim=-1)
            num_synonyms = synonym_to_class.numel() if synonym_to_class is not None else embeds.shape[0] // len(self.config.prompt_templates)
            if num_synonyms == 0 or embeds.shape[0] % num_synonyms:
                raise ValueError(
                    f"input_ids has {embeds.shape[0]} rows, not a multiple of the {num_synonyms} synonyms: row "
                    "s * num_templates + t must hold synonym s in template t"
                )
            text_embeds = F.normalize(embeds.view(num_synonyms, -1, embeds.shape[-1]).mean(1), dim=-1)
        if synonym_to_class is None:
            synonym_to_class = torch.arange(text_embeds.shape[0], device=text_embeds.device)
        void = F.normalize(self.void_embedding.weight, dim=-1)
        return torch.cat([text_embeds.to(void.dtype), void], dim=0), synonym_to_class.to(text_embeds.device).long()

    def dominant_vocabulary(self, dominant_input_ids=None, dominant_attention_mask=None, dominant_text_embeds=None):
        """(V, D) normalised bare-name embeddings of the dominant-category vocabulary."""
        if dominant_text_embeds is not None:
            return dominant_text_embeds
        if dominant_input_ids is None:
            raise ValueError("ITAModel needs `dominant_input_ids` (bare names + 'other') or `dominant_text_embeds`")
        return F.normalize(self.clip.text_embeddings(dominant_input_ids, dominant_attention_mask), dim=-1)

    def _text_length(self) -> int:
        return self.config.text_config.max_position_embeddings

    def build_text_inputs(self, tokenizer, class_names: list[str], seen_class_names: list[str] | None = None) -> dict:
        """Tokenised inputs for a vocabulary: `input_ids`/`attention_mask` (every synonym in every template),
        `synonym_to_class`, `dominant_input_ids`/`dominant_attention_mask` (bare synonyms + extra names),
        `seen_classes` (a synonym shared with `seen_class_names`, default `config.seen_class_names`) and
        `dominant_names`. `class_names` entries list synonyms separated by commas. Built by
        `processing_ita.tokenize_ita_vocabulary`, as `ITAProcessor.tokenize_vocabulary` does."""
        c = self.config
        seen = c.seen_class_names if seen_class_names is None else seen_class_names
        return tokenize_ita_vocabulary(
            tokenizer, list(class_names), c.prompt_templates, c.dominant_extra_names, seen, self._text_length()
        )

    @torch.no_grad()
    def encode_vocabulary(self, tokenizer, class_names: list[str], templates: list[str] | None = None,
                          seen_class_names: list[str] | None = None) -> dict:
        """The text side of a vocabulary, encoded once for any number of forward passes (the open-vocabulary
        pipeline caches it per vocabulary): `forward(pixel_values, pixel_mask=..., **encoded)` gives the outputs of
        the token-id inputs. Returns `text_embeds` `(S, D)` (the template-averaged classifier without void),
        `synonym_to_class` `(S,)`, `dominant_text_embeds` `(V, D)` and `seen_classes` `(K,)`."""
        c = self.config
        text = tokenize_ita_vocabulary(
            tokenizer, list(class_names), list(templates) if templates is not None else c.prompt_templates,
            c.dominant_extra_names, c.seen_class_names if seen_class_names is None else seen_class_names,
            self._text_length(),
        )
        device = self.void_embedding.weight.device
        classifier, synonym_to_class = self.text_classifier(
            text["input_ids"].to(device), text["attention_mask"].to(device), text["synonym_to_class"].to(device)
        )
        encoded = {"text_embeds": classifier[:-1], "synonym_to_class": synonym_to_class, "seen_classes": text["seen_classes"].to(device)}
        if c.uses_dominant_categories:
            encoded["dominant_text_embeds"] = self.dominant_vocabulary(
                text["dominant_input_ids"].to(device), text["dominant_attention_mask"].to(device)
            )
        return encoded

    # ----------------------------------------------------------------- default vocabulary
    _DEFAULT_BUFFERS = ("default_input_ids", "default_attention_mask", "default_dominant_input_ids", "default_dominant_attention_mask")

    def default_class_names(self) -> list[str]:
        """The default vocabulary (`config.id2label`), empty without one."""
        if not self.config.has_default_vocabulary:
            return []
        return [self.config.id2label[i] for i in range(len(self.config.id2label))]

    def _register_default_vocabulary_buffers(self) -> None:
        """Token-id buffers of the default vocabulary, shaped from the config (so that loading finds them)."""
        c = self.config
        if not c.has_default_vocabulary:
            for name in self._DEFAULT_BUFFERS:
                self.register_buffer(name, None)
            return
        layout = vocabulary_layout(self.default_class_names(), c.prompt_templates, c.dominant_extra_names)
        rows, names, length = len(layout["prompts"]), len(layout["dominant_names"]), self._text_length()
        device = self.void_embedding.weight.device
        for name, count in zip(self._DEFAULT_BUFFERS, (rows, rows, names, names)):
            keep = c.uses_dominant_categories or "dominant" not in name
            self.register_buffer(name, torch.zeros(count, length, dtype=torch.long, device=device) if keep else None)

    def set_default_vocabulary(self, class_names: list[str], tokenizer) -> None:
        """Store a vocabulary (and its token ids) in the model: `forward` uses it when given no text, and the
        image-segmentation pipeline names its classes from `config.id2label`."""
        names = check_class_names(class_names)
        text = self.build_text_inputs(tokenizer, names)
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {name: i for i, name in enumerate(names)}
        self.config.has_default_vocabulary = True
        self._register_default_vocabulary_buffers()
        for name, key in zip(self._DEFAULT_BUFFERS, ("input_ids", "attention_mask", "dominant_input_ids", "dominant_attention_mask")):
            if getattr(self, name) is not None:
                getattr(self, name).copy_(text[key])

    def default_text_inputs(self) -> dict:
        """The default vocabulary's text inputs of `forward` (token ids, synonym classes, seen classes)."""
        if not self.config.has_default_vocabulary or self.default_input_ids is None:
            raise ValueError(
                "ITAModel needs `input_ids` (templated class prompts, e.g. from ITAProcessor) or `text_embeds`, or a "
                "default vocabulary (set_default_vocabulary)"
            )
        c = self.config
        layout = vocabulary_layout(self.default_class_names(), c.prompt_templates, c.dominant_extra_names, c.seen_class_names)
        device = self.default_input_ids.device
        return {
            "input_ids": self.default_input_ids, "attention_mask": self.default_attention_mask,
            "synonym_to_class": layout["synonym_to_class"].to(device),
            "dominant_input_ids": self.default_dominant_input_ids,
            "dominant_attention_mask": self.default_dominant_attention_mask,
            "seen_classes": layout["seen_classes"].to(device),
        }

    # ----------------------------------------------------------------- image helpers
    def _image_sizes(self, pixel_values, pixel_mask) -> list[tuple[int, int]]:
        if pixel_mask is None:
            return [tuple(pixel_values.shape[-2:])] * pixel_values.shape[0]
        mask = pixel_mask.bool()
        return [(int(m[:, 0].sum()), int(m[0, :].sum())) for m in mask]

    def _padded(self, size: int) -> int:
        d = self.config.size_divisibility
        return -(-size // d) * d if d > 0 else size

    def clip_crops(self, pixel_values, image_sizes) -> torch.Tensor:
        """Whole-image CLIP inputs (B, 3, S, S) derived from normalised `pixel_values` (valid region of each image)."""
        c = self.config
        mean = torch.tensor(c.pixel_mean, device=pixel_values.device, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(c.pixel_std, device=pixel_values.device, dtype=torch.float32).view(3, 1, 1)
        crops = []
        for image, (h, w) in zip(pixel_values, image_sizes):
            raw = image[:, :h, :w].float() * std + mean
            crops.append(clip_crop(raw, c.clip_image_size, c.clip_image_mean, c.clip_image_std, c.dominant_crop_mode)[0])
        return torch.stack(crops).to(pixel_values.dtype)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        synonym_to_class: torch.LongTensor | None = None,
        dominant_input_ids: torch.LongTensor | None = None,
        dominant_attention_mask: torch.LongTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        dominant_text_embeds: torch.FloatTensor | None = None,
        dominant_indices: torch.LongTensor | None = None,
        clip_pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        seen_classes: torch.BoolTensor | None = None,
        labels: torch.LongTensor | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
        **mask_targets,
    ) -> ITAOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`): images normalised with
                `config.pixel_mean/std` (0-255 units), zero padded bottom/right.
            input_ids / attention_mask (`(num_synonyms * num_templates, L)`), synonym_to_class (`(num_synonyms,)`):
                templated prompts of every synonym and each synonym's class (default: one class per synonym).
            dominant_input_ids / dominant_attention_mask (`(V, L)`): the dominant-category vocabulary, bare names.
            text_embeds (`(num_synonyms, D)`) / dominant_text_embeds (`(V, D)`): normalised precomputed embeddings
                replacing the token ids.
            dominant_indices (`(batch_size, T)`): chosen vocabulary rows (skips the CLIP ranking; training lists).
            clip_pixel_values (`(batch_size, 3, S, S)`): whole-image CLIP crops; derived from `pixel_values` by
                `config.dominant_crop_mode` when absent.
            pixel_mask (`(batch_size, height, width)`): 1 on valid pixels, 0 on padding.
            Without `input_ids` / `text_embeds`, the default vocabulary (`set_default_vocabulary`) is used.
            seen_classes (`(num_classes,)` bool): classes weighted by alpha (seen in training), others by beta;
                default: none seen.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`): semantic maps on the canvas
                (`config.ignore_index` unlabelled and on padding), turned into `mask_labels` / `class_labels` as the
                original's semantic dataset mapper does (the interface `Trainer` uses); ignored when `mask_labels`
                are given (the image processor returns both).
            target_sizes (`list[tuple[int, int]]`): output size of each semantic map (`semantic_maps`).
            original_sizes (`(batch_size, 2)`): each input image's `(H, W)` (`ITAImageProcessor` returns it), copied
                to the output for the post-processing's default size; unused by the model.
            output_hidden_states (`bool`): also return the trunk's features (`hidden_states`) and the pixel
                decoder's.
            mask_labels (`list[torch.Tensor]`, keyword only): per image `(n_i, h, w)` binary masks (zero padded to
                the canvas), Mask2Former's targets.
            class_labels (`list[torch.LongTensor]`, keyword only): per image `(n_i,)` class ids.
                These two stay out of the named parameters so that `Trainer`, which takes every forward parameter
                with "label" in its name as a label, defaults to `label_names=["labels"]`.
        """
        mask_labels, class_labels = mask_targets.pop("mask_labels", None), mask_targets.pop("class_labels", None)
        if mask_targets.pop("output_attentions", None):
            raise ValueError(
                f"{type(self).__name__} returns no attention weights (output_attentions): its trunk is a ConvNeXt and "
                "its text tower runs once per vocabulary, cached (see docs/transformers_conventions.md)"
            )
        if mask_targets:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword arguments {sorted(mask_targets)}")
        check_finite([("pixel_values", pixel_values), ("clip_pixel_values", clip_pixel_values)])
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states)
        if input_ids is None and text_embeds is None and self.config.has_default_vocabulary:
            default = self.default_text_inputs()
            input_ids, attention_mask = default["input_ids"], default["attention_mask"]
            synonym_to_class = default["synonym_to_class"] if synonym_to_class is None else synonym_to_class
            seen_classes = default["seen_classes"] if seen_classes is None else seen_classes
            if dominant_input_ids is None and dominant_text_embeds is None:
                dominant_input_ids = default["dominant_input_ids"]
                dominant_attention_mask = default["dominant_attention_mask"]
        classifier, synonym_to_class = self.text_classifier(input_ids, attention_mask, synonym_to_class, text_embeds)
        num_classes = int(synonym_to_class.max()) + 1
        if synonym_to_class.min() < 0 or torch.bincount(synonym_to_class, minlength=num_classes).min() == 0:
            raise ValueError(f"synonym_to_class must give every class id in [0, {num_classes}) at least one synonym")
        gather_index = synonym_gather_index(synonym_to_class, num_classes)
        vocabulary = (self.dominant_vocabulary(dominant_input_ids, dominant_attention_mask, dominant_text_embeds)
                      if self.config.uses_dominant_categories else None)
        if seen_classes is None:
            seen_classes = torch.zeros(num_classes, dtype=torch.bool)
        seen_classes = seen_classes.to(pixel_values.device).bool()
        image_sizes = self._image_sizes(pixel_values, pixel_mask)
        canvas = tuple(pixel_values.shape[-2:])

        common = dict(
            classifier=classifier, gather_index=gather_index, vocabulary=vocabulary, seen_classes=seen_classes,
            output_hidden_states=output_hidden_states,
        )
        if self.config.batch_invariant:
            # Each image runs on its own padded canvas (images sharing one run together): convolutions and
            # attention never see another image's padding, so outputs do not depend on the rest of the batch.
            groups: dict = {}
            for index, (h, w) in enumerate(image_sizes):
                groups.setdefault((min(self._padded(h), canvas[0]), min(self._padded(w), canvas[1])), []).append(index)
        else:
            groups = {canvas: list(range(len(image_sizes)))}
        parts = []
        for (gh, gw), members in groups.items():
            pick = torch.tensor(members, device=pixel_values.device)
            parts.append((members, self._forward_group(
                pixel_values[pick][:, :, :gh, :gw], [image_sizes[i] for i in members],
                None if clip_pixel_values is None else clip_pixel_values[pick],
                None if dominant_indices is None else dominant_indices[pick],
                None if target_sizes is None else [target_sizes[i] for i in members], **common,
            )))
        out = parts[0][1] if len(parts) == 1 else merge_groups(parts, len(image_sizes), _BATCHED, _EDGE_PADDED)
        out["image_sizes"], out["original_sizes"] = image_sizes, original_sizes
        out["text_classifier"] = classifier

        if labels is not None and mask_labels is None:
            if labels.ndim != 3 or tuple(labels.shape[-2:]) != canvas or labels.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"labels must be (batch_size, height, width) = {(pixel_values.shape[0], *canvas)}, got "
                    f"{tuple(labels.shape)}"
                )
            targets = [semantic_to_mask_targets(label, self.config.ignore_index) for label in labels]
            mask_labels, class_labels = [t[0] for t in targets], [t[1] for t in targets]
            ids = torch.cat(class_labels)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
                raise ValueError(f"labels hold class ids outside 0..{num_classes - 1} (ignore {self.config.ignore_index})")
        if mask_labels is not None:
            if class_labels is None:
                raise ValueError("mask_labels need class_labels (one class id per mask)")
            out["loss"], out["loss_dict"] = self._loss(out, mask_labels, class_labels, canvas, num_classes)
        output = ITAOutput(**out)
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()

    def _forward_group(
        self, pixel_values, image_sizes, clip_pixel_values, dominant_indices, target_sizes, *, classifier,
        gather_index, vocabulary, seen_classes, output_hidden_states,
    ) -> dict:
        """Steps 2-6 for images sharing one canvas (B, 3, H, W)."""
        c = self.config
        out: dict = {}
        with torch.no_grad():
            hidden = self.clip.dense_features(pixel_values)
            if dominant_indices is None and c.uses_dominant_categories:
                if clip_pixel_values is None:
                    clip_pixel_values = self.clip_crops(pixel_values, image_sizes)
                image_embeds = F.normalize(self.clip.image_embeddings(clip_pixel_values), dim=-1)
                # The ranking uses exp(logit_scale) without the clamp at 100 used elsewhere, as the original.
                probs = (self.clip.logit_scale.exp() * image_embeds @ vocabulary.T).softmax(-1)
                count = min(c.num_text_queries, vocabulary.shape[0])
                dominant_indices = torch.sort(probs, dim=-1, descending=True, stable=True).indices[:, :count]
                out.update(dominant_probs=probs, dominant_image_embeds=image_embeds)
        batch = pixel_values.shape[0]
        if c.uses_dominant_categories:
            selected = vocabulary[dominant_indices.to(vocabulary.device)].to(self.dominant_projection.dtype)
            text_queries = torch.einsum("bij,bjk->bik", selected, self.dominant_projection.unsqueeze(0).repeat(batch, 1, 1))
            out.update(dominant_indices=dominant_indices, text_queries=text_queries)
        else:
            # FC-CLIP: no dominant-category step; the learned queries run alone.
            text_queries = hidden[-1].new_zeros((batch, 0, c.hidden_dim))

        # The ConvNeXt stages hand back channels-last tensors (their last op is a permute); the original's pixel
        # decoder convolves standard-layout maps, and the channels-last kernels round differently.
        features = [h.contiguous() for h in hidden[1:5]]
        decoded = self.pixel_decoder(features)
        all_classes, all_masks = self.decoder(decoded.multi_scale_features, decoded.mask_features, text_queries, classifier, gather_index)
        out.update(
            class_queries_logits=all_classes[-1], masks_queries_logits=all_masks[-1], all_class_logits=tuple(all_classes),
            all_mask_logits=tuple(all_masks),
        )
        if output_hidden_states:
            out.update(hidden_states=tuple(hidden), mask_features=decoded.mask_features,
                       multi_scale_features=tuple(decoded.multi_scale_features))
        if self.training:
            return out

        # Out-of-vocabulary branch: the frozen CLIP classifies mask-pooled dense features (res5).
        dense = hidden[-1]
        masks = F.interpolate(all_masks[-1], size=dense.shape[-2:], mode="bilinear", align_corners=False)
        with torch.no_grad():
            pooled = self.clip.pooled_embeddings(mask_pooling(dense, masks))
            out_vocab = classification_logits(pooled, classifier, self.clip.logit_scale, gather_index)
        valid = (masks > 0).flatten(2).sum(-1) > 0 if c.ensemble_on_valid_mask else None
        mask_cls = geometric_ensemble(
            all_classes[-1], out_vocab[..., :-1], seen_classes, c.geometric_ensemble_alpha, c.geometric_ensemble_beta, valid
        )
        logits, upsampled = canvas_scores(mask_cls, all_masks[-1], pixel_values.shape[-2:])
        out.update(out_vocab_logits=out_vocab, pooled_clip_embeds=pooled, mask_class_logits=mask_cls, logits=logits)
        if target_sizes is not None:
            out["semantic_maps"] = final_maps(mask_cls, upsampled, logits, image_sizes, target_sizes, c.postprocess_order)
        return out

    def _loss(self, out, mask_labels, class_labels, canvas, num_classes):
        """Hungarian matching and CE / BCE / dice on every prediction (transformers' Mask2FormerLoss)."""
        c = self.config
        padded = []
        for masks in mask_labels:
            full = masks.new_zeros((masks.shape[0], *canvas), dtype=torch.float32)
            full[:, : masks.shape[1], : masks.shape[2]] = masks.float()
            padded.append(full.to(out["masks_queries_logits"].device))
        labels = [labels.to(out["masks_queries_logits"].device).long() for labels in class_labels]
        auxiliary = None
        if c.deep_supervision:
            auxiliary = [
                {"masks_queries_logits": m, "class_queries_logits": k}
                for m, k in zip(out["all_mask_logits"][:-1], out["all_class_logits"][:-1])
            ]
        raw = self.criterion(num_classes)(out["masks_queries_logits"], out["class_queries_logits"], padded, labels, auxiliary)
        weights = {"loss_ce": c.class_weight, "loss_mask": c.mask_weight, "loss_dice": c.dice_weight}
        weighted = {}
        for key, value in raw.items():
            name = key.replace("loss_cross_entropy", "loss_ce")
            weighted[name] = value * weights[name.rsplit("_", 1)[0] if name[-1].isdigit() else name]
        return sum(weighted.values()), weighted

    def post_process_semantic_segmentation(self, outputs: ITAOutput, target_sizes=None) -> list[torch.Tensor]:
        """Per-image class-id maps (h, w): argmax of `outputs.logits` cropped to each image, resized to `target_sizes`
        (default: `outputs.original_sizes` when given, else no resize)."""
        maps, defaults = [], outputs.image_sizes if outputs.original_sizes is None else outputs.original_sizes.tolist()
        for index, size in enumerate(outputs.image_sizes):
            target = target_sizes[index] if target_sizes is not None else defaults[index]
            maps.append(crop_and_resize(outputs.logits[index], size, target).argmax(0))
        return maps


__all__ = ["ITAModel", "ITAOutput", "ITAPreTrainedModel"]
