"""ITA's masked-attention decoder: Mask2Former's decoder layer without self-attention, text queries first, and
FC-CLIP's open-vocabulary class head (mask pooling + MLP + cosine with the text classifier, max over synonyms).
With `decoder_self_attention` (FC-CLIP) the layers keep Mask2Former's query self-attention between the masked
cross-attention and the FFN; without text queries (FC-CLIP) only the learned queries run."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerMLPPredictionHead,
    Mask2FormerSinePositionEmbedding,
)

from .configuration_ita import ITAConfig


def mask2former_config(config: ITAConfig) -> Mask2FormerConfig:
    """The Mask2Former settings the reused transformers modules read."""
    return Mask2FormerConfig(
        feature_size=config.feature_size,
        mask_feature_size=config.mask_feature_size,
        hidden_dim=config.hidden_dim,
        encoder_layers=config.encoder_layers,
        encoder_feedforward_dim=config.encoder_feedforward_dim,
        num_attention_heads=config.num_attention_heads,
        dim_feedforward=config.dim_feedforward,
        pre_norm=config.pre_norm,
        dropout=0.0,
        common_stride=config.common_stride,
        feature_strides=[4, 8, 16, 32],
        use_pretrained_backbone=False,
    )


def mask_pooling(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean of `features` (B, C, H, W) over each mask's positive-logit area: -> (B, Q, C).

    Masks (B, Q, h, w) are resized bilinearly to the feature size first; empty masks give 0 (denominator + 1e-8).
    The binarised mask carries no gradient."""
    if mask_logits.shape[-2:] != features.shape[-2:]:
        mask_logits = F.interpolate(mask_logits, size=features.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():
        mask = (mask_logits.detach() > 0).to(mask_logits.dtype)
        denominator = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denominator)


def synonym_gather_index(synonym_to_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, max_synonyms) column indices into the synonym logits; missing slots point one past the end."""
    counts = torch.bincount(synonym_to_class, minlength=num_classes)
    width = max(int(counts.max()), 1)
    index = torch.full((num_classes, width), synonym_to_class.numel(), dtype=torch.long, device=synonym_to_class.device)
    order = torch.argsort(synonym_to_class, stable=True)
    slots = torch.arange(synonym_to_class.numel(), device=synonym_to_class.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    index[synonym_to_class[order], slots] = order
    return index


def classification_logits(
    embeds: torch.Tensor, text_classifier: torch.Tensor, logit_scale: torch.Tensor, gather_index: torch.Tensor
) -> torch.Tensor:
    """Cosine logits scaled by exp(logit_scale) (clamped at 100), max over each class's synonyms, void last.

    Args:
        embeds: (B, Q, D) unnormalised embeddings.
        text_classifier: (S + 1, D) normalised synonym embeddings, the void embedding last.
        gather_index: (K, max_synonyms) from `synonym_gather_index`.
    Returns: (B, Q, K + 1).
    """
    embeds = F.normalize(embeds, dim=-1)
    scale = torch.clamp(logit_scale.exp(), max=100)
    logits = scale * embeds @ text_classifier.T
    synonyms = logits[..., :-1]
    padded = torch.cat([synonyms, synonyms.new_full((*synonyms.shape[:-1], 1), float("-inf"))], dim=-1)
    per_class = padded[..., gather_index].max(-1).values
    return torch.cat([per_class, logits[..., -1:]], dim=-1)


class ITADecoderLayer(Mask2FormerMaskedAttentionDecoderLayer):
    """Mask2Former's decoder layer; ITA comments its self-attention sub-layer out (queries never interact), FC-CLIP
    keeps it (`self_attention=True`). Masked cross-attention, [self-attention,] FFN, each with residual and LayerNorm
    (post- or pre-norm)."""

    def __init__(self, config: Mask2FormerConfig, self_attention: bool = False):
        super().__init__(config)
        self.has_self_attention = self_attention
        if not self_attention:
            del self.self_attn
            del self.self_attn_layer_norm

    def forward(self, hidden_states, memory, memory_position, query_position, attention_mask):
        """hidden_states / query_position: (Q, B, C); memory / memory_position: (HW, B, C);
        attention_mask: (B * heads, Q, HW), True = not attended."""
        residual = hidden_states
        if self.pre_norm:
            hidden_states = self.cross_attn_layer_norm(hidden_states)
        hidden_states = self.cross_attn(
            query=hidden_states + query_position, key=memory + memory_position, value=memory, attn_mask=attention_mask
        )[0]
        hidden_states = residual + F.dropout(hidden_states, p=self.dropout, training=self.training)
        if not self.pre_norm:
            hidden_states = self.cross_attn_layer_norm(hidden_states)
        if self.has_self_attention:
            # q = k = queries + query positions, v = queries (FC-CLIP / Mask2Former).
            residual = hidden_states
            if self.pre_norm:
                hidden_states = self.self_attn_layer_norm(hidden_states)
            hidden_states = self.self_attn(hidden_states=hidden_states, position_embeddings=query_position)[0]
            hidden_states = residual + F.dropout(hidden_states, p=self.dropout, training=self.training)
            if not self.pre_norm:
                hidden_states = self.self_attn_layer_norm(hidden_states)
        residual = hidden_states
        if self.pre_norm:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
        hidden_states = residual + F.dropout(hidden_states, p=self.dropout, training=self.training)
        if not self.pre_norm:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states


class ITATransformerDecoder(nn.Module):
    """Text (ITA) + learned queries through `decoder_layers - 1` masked-attention layers over the three pixel-decoder
    levels (1/32, 1/16, 1/8 in turn), with a mask and class prediction before the first layer and after each."""

    num_feature_levels = 3

    def __init__(self, config: ITAConfig):
        super().__init__()
        m2f = mask2former_config(config)
        hidden = config.hidden_dim
        self.num_heads = config.num_attention_heads
        self.num_text_queries = config.num_text_queries
        self.position_embedding = Mask2FormerSinePositionEmbedding(num_position_features=hidden // 2, normalize=True)
        self.layers = nn.ModuleList(
            ITADecoderLayer(m2f, config.decoder_self_attention) for _ in range(config.decoder_layers - 1)
        )
        self.decoder_norm = nn.LayerNorm(hidden)
        self.query_feat = nn.Embedding(config.num_learned_queries, hidden)
        # Rows [0, num_text_queries) pair with the text queries in rank order, the rest with the learned queries.
        self.query_embed = nn.Embedding(config.num_queries, hidden)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden)
        self.input_proj = nn.ModuleList(
            nn.Identity() if config.feature_size == hidden else nn.Conv2d(config.feature_size, hidden, kernel_size=1)
            for _ in range(self.num_feature_levels)
        )
        self.mask_embed = Mask2FormerMLPPredictionHead(hidden, hidden, config.mask_feature_size, 3)
        self.mask_pooling_proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden))
        self.class_embed = Mask2FormerMLPPredictionHead(hidden, hidden, config.projection_dim, 3)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))

    def predict(self, queries, mask_features, text_classifier, gather_index, mask_size):
        """queries (Q, B, C) -> class logits (B, Q, K + 1), mask logits (B, Q, H/4, W/4) and the next layer's
        attention mask (B * heads, Q, h * w) at `mask_size` (True where sigmoid < 0.5)."""
        decoded = self.decoder_norm(queries).transpose(0, 1)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        pooled = self.mask_pooling_proj(mask_pooling(mask_features, mask_logits))
        class_logits = classification_logits(self.class_embed(pooled + decoded), text_classifier, self.logit_scale, gather_index)
        attn = F.interpolate(mask_logits, size=mask_size, mode="bilinear", align_corners=False)
        attn = attn.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return class_logits, mask_logits, attn.detach()

    def forward(self, multi_scale_features, mask_features, text_queries, text_classifier, gather_index):
        """
        Args:
            multi_scale_features: three (B, feature_size, h_l, w_l) maps, lowest resolution first.
            mask_features: (B, mask_feature_size, H/4, W/4).
            text_queries: (B, T, hidden) content of the text queries (T <= num_text_queries), rank order; T = 0
                without a dominant-category step (FC-CLIP).
            text_classifier: (S + 1, D); gather_index: (K, max_synonyms).
        Returns: lists of class logits (B, Q, K + 1) and mask logits (B, Q, H/4, W/4), one per prediction,
            Q = T + num_learned_queries.
        """
        sources, positions, sizes = [], [], []
        for level, feature in enumerate(multi_scale_features):
            sizes.append(feature.shape[-2:])
            positions.append(self.position_embedding(feature.shape, feature.device, feature.dtype).flatten(2).permute(2, 0, 1))
            projected = self.input_proj[level](feature).flatten(2) + self.level_embed.weight[level][None, :, None]
            sources.append(projected.permute(2, 0, 1))
        batch, num_text = text_queries.shape[0], text_queries.shape[1]
        learned = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        queries = torch.cat([text_queries.transpose(0, 1), learned], dim=0)
        # With fewer dominant categories than text slots, the unused slots' position rows are skipped.
        rows = torch.cat([
            torch.arange(num_text, device=learned.device),
            torch.arange(self.num_text_queries, self.query_embed.num_embeddings, device=learned.device),
        ])
        query_position = self.query_embed.weight[rows].unsqueeze(1).repeat(1, batch, 1)

        class_logits, mask_logits, attn = self.predict(queries, mask_features, text_classifier, gather_index, sizes[0])
        all_classes, all_masks = [class_logits], [mask_logits]
        for index, layer in enumerate(self.layers):
            level = index % self.num_feature_levels
            # A query whose mask covers nothing would attend to nothing (NaN): let it attend everywhere.
            attn[torch.where(attn.sum(-1) == attn.shape[-1])] = False
            queries = layer(queries, sources[level], positions[level], query_position, attn)
            next_size = sizes[(index + 1) % self.num_feature_levels]
            class_logits, mask_logits, attn = self.predict(queries, mask_features, text_classifier, gather_index, next_size)
            all_classes.append(class_logits)
            all_masks.append(mask_logits)
        return all_classes, all_masks


__all__ = ["ITADecoderLayer", "ITATransformerDecoder", "classification_logits", "mask_pooling", "synonym_gather_index"]
