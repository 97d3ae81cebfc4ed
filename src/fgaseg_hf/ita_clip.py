"""The frozen ConvNeXt CLIP of ITA on transformers parts, and the whole-image crop of the dominant-category step.

open_clip's `convnext_large_d_320` is a timm ConvNeXt trunk (`ConvNextModel`; its pooler LayerNorm is the CLIP
pooling head's norm), an MLP image head (fc1, GELU, fc2 without bias; no transformers counterpart) and a CLIP text
tower (`CLIPTextModelWithProjection`).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, ConvNextModel

from .configuration_ita import ITAConfig


class ITAVisionHead(nn.Module):
    """open_clip's `timm_proj="mlp"` head: (..., C5) -> (..., projection_dim)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ITACLIP(nn.Module):
    """Both CLIP towers and CLIP's logit scale. Frozen in ITA: everything here runs without gradients."""

    def __init__(self, config: ITAConfig):
        super().__init__()
        self.vision_model = ConvNextModel(config.vision_config)
        self.vision_head = ITAVisionHead(config.vision_config.hidden_sizes[-1], config.head_hidden_size, config.projection_dim)
        self.text_model = CLIPTextModelWithProjection(config.text_config)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.config = config
        self._text_cache: dict = {}
        self._text_cache_lock = threading.Lock()  # threads sharing one model share the cache

    def dense_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Trunk features `(stem, res2, res3, res4, res5)`: strides 4, 4, 8, 16, 32. res5 is also the dense CLIP
        feature map the out-of-vocabulary branch pools (timm's `norm_pre` is the identity for this model)."""
        return tuple(self.vision_model(pixel_values, output_hidden_states=True).hidden_states)

    def pooled_embeddings(self, pooled_features: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings of already pooled trunk features: (..., C5) -> (..., projection_dim).

        The CLIP pooling head average-pools a 1 x 1 map (the identity) and applies its LayerNorm."""
        return self.vision_head(self.vision_model.layernorm(pooled_features))

    def image_embeddings(self, clip_pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised CLIP image embeddings of whole-image crops: (B, 3, S, S) -> (B, projection_dim)."""
        return self.vision_head(self.vision_model(clip_pixel_values).pooler_output)

    def _text_version(self) -> tuple:
        # In-place weight updates (load_state_dict, optimiser steps) bump `_version`; a new tensor changes the pointer.
        return tuple((p.data_ptr(), p._version) for p in self.text_model.parameters())

    def text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised projected text embeddings (N, L) -> (N, projection_dim), cached per token-id tensor
        (the text tower is frozen, so a vocabulary is encoded once)."""
        key = (
            input_ids.detach().cpu().numpy().tobytes(), tuple(input_ids.shape),
            None if attention_mask is None else attention_mask.detach().cpu().numpy().tobytes(),
            str(input_ids.device), self._text_version(), self.config.trim_text_padding,
        )
        with self._text_cache_lock:
            cached = self._text_cache.get(key)
        if cached is not None:
            return cached
        if self.config.trim_text_padding and attention_mask is not None and input_ids.shape[0] > 0:
            # Causal attention: no output up to a row's end-of-text token depends on the padding after it, so the
            # columns past the longest prompt are dropped (77 -> ~12 tokens for typical prompts). Equal up to float
            # rounding (other matrix shapes); `trim_text_padding=False` gives the original's bits.
            length = max(1, int(attention_mask.sum(dim=1).max()))
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        with torch.no_grad():
            embeds = self.text_model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
        with self._text_cache_lock:
            while len(self._text_cache) >= 8:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[key] = embeds
        return embeds


def clip_crop(
    image: torch.Tensor, size: int, mean: list[float], std: list[float], mode: str = "resize_center_crop",
    box: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The whole-image CLIP input of the dominant-category step: (3, H, W) image in 0-255 -> (3, size, size).

    "resize_center_crop" resizes the shortest edge to `size` (bicubic, antialiased) and centre crops;
    "random_resized_crop" draws a box as torchvision's `RandomResizedCrop(scale=(0.9, 1), ratio=(3/4, 4/3))` does
    (same draws from the global torch RNG; the original's train-transform quirk) and resizes it to `size`.
    Returns the normalised crop and the box (top, left, height, width) in image pixels.
    """
    height, width = image.shape[-2:]
    image = image.float()
    if box is None and mode == "random_resized_crop":
        box = random_resized_crop_box(height, width)
    if box is not None:
        top, left, h, w = box
        patch = image[:, top : top + h, left : left + w]
        out = F.interpolate(patch[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
    else:
        scale = size / min(height, width)
        new_h, new_w = (size, int(size * width / height)) if height <= width else (int(size * height / width), size)
        resized = F.interpolate(image[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)[0]
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        out = resized[:, top : top + size, left : left + size]
        box = (int(top / scale), int(left / scale), int(round(size / scale)), int(round(size / scale)))
    out = out.clamp(0, 255) / 255.0
    mean_t = torch.tensor(mean, dtype=out.dtype, device=out.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=out.dtype, device=out.device).view(3, 1, 1)
    return (out - mean_t) / std_t, box


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float] = (0.9, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box sampling (10 tries, then a centred crop of clamped aspect ratio), with the
    same draws from the global torch RNG, so that a seeded run picks the original's box."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


__all__ = ["ITACLIP", "ITAVisionHead", "clip_crop", "random_resized_crop_box"]
