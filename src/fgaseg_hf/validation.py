"""Checks shared by both model families: every size in a config is a positive integer (so that a zero or negative
width, head count, patch or window size is refused when the config is built, in one line naming the field, instead
of failing deep inside a layer), and model inputs are finite (a NaN image would otherwise give silent garbage)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_sizes(owner: str, values: dict, minimum: int = 1) -> None:
    """Raise `ValueError` unless every value (an int, a list of ints, or None for "not set") is an integer
    `>= minimum`. `owner` names the config in the message, e.g. "FGASegConfig"."""
    for name, value in values.items():
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
                what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                several = isinstance(value, (list, tuple))
                raise ValueError(f"{owner}.{name} must be {what}{' in every entry' if several else ''}, got {value!r}")


def check_divides(owner: str, width_name: str, width: int, heads_name: str, heads: int) -> None:
    if width % heads:
        raise ValueError(f"{owner}.{width_name} ({width}) must be divisible by {heads_name} ({heads})")


def check_clip_text_config(owner: str, text) -> None:
    check_sizes(f"{owner}.text_config", {
        "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "max_position_embeddings": text.max_position_embeddings, "vocab_size": text.vocab_size,
        "projection_dim": getattr(text, "projection_dim", None),
    })
    check_divides(f"{owner}.text_config", "hidden_size", text.hidden_size, "num_attention_heads", text.num_attention_heads)


def check_clip_vision_config(owner: str, vision) -> None:
    check_sizes(f"{owner}.vision_config", {
        "hidden_size": vision.hidden_size, "intermediate_size": vision.intermediate_size,
        "num_hidden_layers": vision.num_hidden_layers, "num_attention_heads": vision.num_attention_heads,
        "image_size": vision.image_size, "patch_size": vision.patch_size,
    })
    check_divides(f"{owner}.vision_config", "hidden_size", vision.hidden_size, "num_attention_heads", vision.num_attention_heads)


def check_finite(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> None:
    """`ValueError` when a floating-point input holds NaN or infinite values (skipped while compiling: the check
    reads the tensor back to the host)."""
    if torch.compiler.is_compiling():
        return
    for name, tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{name} holds {bad} NaN or infinite value(s) of {tensor.numel()}: the outputs would be meaningless "
                "(check the image decoding and normalisation)"
            )


__all__ = ["check_clip_text_config", "check_clip_vision_config", "check_divides", "check_finite", "check_sizes"]


def check_fgaseg_sizes(config) -> None:
    """Every size of an `FGASegConfig` (and of its CLIP) is a positive integer."""
    check_clip_vision_config("FGASegConfig.clip_config", config.clip_config.vision_config)
    check_clip_text_config("FGASegConfig.clip_config", config.clip_config.text_config)
    check_sizes("FGASegConfig", {"clip_config.projection_dim": config.clip_config.projection_dim})
    check_sizes("FGASegConfig", {
        "text_guidance_dim": config.text_guidance_dim, "text_guidance_proj_dim": config.text_guidance_proj_dim,
        "appearance_guidance_dim": config.appearance_guidance_dim,
        "appearance_guidance_proj_dim": config.appearance_guidance_proj_dim, "decoder_dims": config.decoder_dims,
        "decoder_guidance_dims": config.decoder_guidance_dims,
        "decoder_guidance_proj_dims": config.decoder_guidance_proj_dims,
        "num_aggregation_layers": config.num_aggregation_layers, "num_attention_heads": config.num_attention_heads,
        "hidden_dim": config.hidden_dim, "pooling_size": config.pooling_size, "window_size": config.window_size,
        "p2t_num_layers": config.p2t_num_layers, "p2t_num_heads": config.p2t_num_heads,
        "local_alignment_kernel_size": config.local_alignment_kernel_size,
        "projector_kernel_size": config.projector_kernel_size, "image_size": config.image_size,
        "default_vocabulary_token_length": config.default_vocabulary_token_length,
    })


def check_ita_sizes(config) -> None:
    """Every size of an `ITAConfig` (and of its CLIP towers) is a positive integer."""
    vision = config.vision_config
    check_sizes("ITAConfig.vision_config", {"hidden_sizes": vision.hidden_sizes, "depths": vision.depths,
                                            "patch_size": getattr(vision, "patch_size", None)})
    check_clip_text_config("ITAConfig", config.text_config)
    check_sizes("ITAConfig", {
        "vision_head_hidden_size": config.vision_head_hidden_size, "clip_image_size": config.clip_image_size,
        "feature_size": config.feature_size, "mask_feature_size": config.mask_feature_size,
        "encoder_feedforward_dim": config.encoder_feedforward_dim, "num_attention_heads": config.num_attention_heads,
        "common_stride": config.common_stride, "hidden_dim": config.hidden_dim,
        "dim_feedforward": config.dim_feedforward, "decoder_layers": config.decoder_layers,
        "train_num_points": config.train_num_points, "min_size_test": config.min_size_test,
        "max_size_test": config.max_size_test,
    })
    # Zero is meaningful here: no encoder layer, no padding to a multiple.
    check_sizes("ITAConfig", {"encoder_layers": config.encoder_layers, "size_divisibility": config.size_divisibility}, minimum=0)


# Size fields of transformers' sub-configs (CLIP towers, ConvNeXt): checked in plain dicts before the sub-config
# is built, since some of their own validators divide by these values.
_SUB_CONFIG_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                     "patch_size", "max_position_embeddings", "vocab_size", "projection_dim", "hidden_sizes", "depths",
                     "num_channels")


def check_sub_config_dict(owner: str, values) -> None:
    """`values` (a sub-config given as a dict, possibly nesting `text_config` / `vision_config`): every size field
    present is a positive integer."""
    if not isinstance(values, dict):
        return
    check_sizes(owner, {k: values[k] for k in _SUB_CONFIG_SIZES if k in values})
    if "hidden_size" in values and "num_attention_heads" in values:
        check_divides(owner, "hidden_size", values["hidden_size"], "num_attention_heads", values["num_attention_heads"])
    for key in ("text_config", "vision_config"):
        check_sub_config_dict(f"{owner}.{key}", values.get(key))
