"""Dense CLIP features for FGA-Seg, computed with the modules of a transformers `CLIPModel`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel


def dense_last_block(block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The original's `forward_dense` of the last vision block.

    Not attention: every token keeps only its own value projection (through the output projection), and the
    residual added to every token is the block input of the CLS token. Queries and keys are never used, so no
    token mixes with another except through the CLS residual.

    Args:
        block: a `CLIPEncoderLayer`.
        hidden_states: `(batch, 1 + grid * grid, width)` input of the block.
    Returns:
        `(batch, 1 + grid * grid, width)`.
    """
    attention = block.self_attn
    values = attention.out_proj(attention.v_proj(block.layer_norm1(hidden_states)))
    hidden_states = hidden_states[:, :1] + values
    return hidden_states + block.mlp(block.layer_norm2(hidden_states))


def dense_image_features(
    clip: CLIPModel, pixel_values: torch.Tensor, guidance_layers: list[int], output_hidden_states: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor], tuple[torch.Tensor, ...] | None]:
    """Run the CLIP vision tower densely.

    The position embeddings are resized bicubically to the input's token grid, every block but the last runs as
    usual, the last runs in dense mode, and `post_layernorm` plus the visual projection apply to every token.

    Args:
        clip: the `CLIPModel`.
        pixel_values: `(batch, 3, size, size)` CLIP-normalised images.
        guidance_layers: indexes of the blocks whose outputs are returned as guidance.
    Returns:
        dense features `(batch, 1 + grid * grid, projection_dim)` with CLS first; the guidance block outputs,
        each `(batch, 1 + grid * grid, width)`; all block outputs when `output_hidden_states`.
    """
    vision = clip.vision_model
    hidden_states = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
    hidden_states = vision.pre_layrnorm(hidden_states)
    layers = vision.encoder.layers
    guidance, all_states = [], [hidden_states] if output_hidden_states else None
    wanted = set(guidance_layers)
    for index, layer in enumerate(layers[:-1]):
        hidden_states = layer(hidden_states, None)
        if index in wanted:
            guidance.append(hidden_states)
        if all_states is not None:
            all_states.append(hidden_states)
    hidden_states = dense_last_block(layers[-1], hidden_states)
    if all_states is not None:
        all_states.append(hidden_states)
    order = sorted(wanted)
    guidance = [guidance[order.index(i)] for i in guidance_layers]
    dense = clip.visual_projection(vision.post_layernorm(hidden_states))
    return dense, guidance, tuple(all_states) if all_states is not None else None


def encode_prompts(clip: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalised projected EOT features of tokenised prompts, `(num_prompts, projection_dim)`.

    Trailing padding after the last end-of-text token is cut first: the text tower is causal, so the EOT feature
    never depends on it (the original pads every prompt to 77 tokens).
    """
    if not torch.compiler.is_compiling():  # a compiled graph keeps the full length (the cut is data-dependent)
        eos = clip.config.text_config.eos_token_id
        is_eos = input_ids == eos
        if eos == 2 or not bool(is_eos.any(dim=-1).all()):
            end_positions = input_ids.argmax(dim=-1)
        else:
            end_positions = is_eos.int().argmax(dim=-1)
        length = int(end_positions.max().item()) + 1
        input_ids = input_ids[:, :length]
        if attention_mask is not None:
            attention_mask = attention_mask[:, :length]
    outputs = clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
    features = clip.text_projection(outputs.pooler_output)
    return F.normalize(features, dim=-1)
