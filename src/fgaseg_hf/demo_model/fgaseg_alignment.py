"""Text-pixel alignment blocks of FGA-Seg: pixel-to-text cross-attention, local alignment and the projector."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sine_position_encoding(height: int, width: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """DETR-style 2-D sine encoding, `(height * width, dim)`: y features first, sin/cos interleaved.

    Row and column indexes 1..n are divided by n (+1e-6) and scaled by 2*pi; temperature 1e4.
    """
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)

    def embed(values):
        angles = values[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = embed(y)[:, None, :].expand(height, width, half)
    pos_x = embed(x)[None, :, :].expand(height, width, half)
    encoding = torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, dim)
    return encoding.to(dtype) if dtype is not None else encoding


def per_sample_conv(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Convolve each sample with its own bank of kernels in one grouped convolution.

    Args:
        features: `(batch, channels, height, width)`.
        weight: `(batch, kernels, channels, k, k)`.
        bias: `(batch, kernels)`.
    Returns:
        `(batch, kernels, height, width)` (zero padding, stride 1).
    """
    batch, channels, height, width = features.shape
    kernels, size = weight.shape[1], weight.shape[-1]
    out = F.conv2d(
        features.reshape(1, batch * channels, height, width),
        weight.reshape(batch * kernels, channels, size, size),
        bias.reshape(batch * kernels),
        padding=size // 2,
        groups=batch,
    )
    return out.view(batch, kernels, height, width)


class PixelToTextLayer(nn.Module):
    """One cross-attention layer of the original `P2Tformer` (`ShortCut_CrossAttention`).

    Text embeddings query the image tokens (keys carry a sine position encoding, values do not); the attended
    result passes a single linear layer, is added to the query, and is layer-normalised.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.layer_norm = nn.LayerNorm(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, text: torch.Tensor, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """text `(batch, queries, dim)`, image `(batch, tokens, dim)`, position `(tokens, dim)` -> `(batch, queries, dim)`."""
        query = self._heads(self.q_proj(text))
        key = self._heads(self.k_proj(image + position))
        value = self._heads(self.v_proj(image))
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(text.shape)
        return self.layer_norm(text + self.dense(self.out_proj(attended)))


class PixelTextCrossAttention(nn.Module):
    """Refines text embeddings with the image (the original `P2Tformer`, called `DCDT` in its predictor).

    Each text vector attends to the image independently (no attention among text vectors), so every
    (class, template) embedding is refined on its own; the result is `text + gamma * refined`.
    """

    def __init__(self, dim: int, num_heads: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([PixelToTextLayer(dim, num_heads) for _ in range(num_layers)])
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, image_features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image_features: `(batch, dim, height, width)` dense CLIP features.
            text: `(num_classes, num_templates, dim)` normalised text embeddings, shared by the batch.
        Returns:
            `(batch, num_classes, num_templates, dim)`.
        """
        batch, dim, height, width = image_features.shape
        classes, templates = text.shape[:2]
        image = image_features.flatten(2).transpose(1, 2)
        position = sine_position_encoding(height, width, dim, image.device, image.dtype)
        base = text.reshape(1, classes * templates, dim).expand(batch, -1, -1)
        refined = base
        for layer in self.layers:
            refined = layer(refined, image, position)
        return (base + self.gamma * refined).view(batch, classes, templates, dim)


class LocalAlignment(nn.Module):
    """Local cost volume (the original `Local_align`): each text embedding generates a k x k kernel per channel.

    The kernel taps are softmax-normalised per input channel; the kernel is convolved with the L2-normalised
    image features, giving one local-similarity map per class and template.
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.text_to_kernel = nn.Linear(dim, dim * kernel_size * kernel_size + 1)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """image `(batch, dim, h, w)`, text `(batch, classes, templates, dim)` -> `(batch, templates, classes, h, w)`."""
        batch, classes, templates, dim = text_features.shape
        image = F.normalize(image_features, dim=1)
        params = self.text_to_kernel(F.normalize(text_features, dim=-1))
        size = self.kernel_size
        weight = params[..., :-1].reshape(batch, classes, templates, dim, size * size).softmax(dim=-1)
        # The original renormalises the softmax (a no-op up to rounding); kept for bit-level parity.
        weight = weight / weight.sum(dim=-1, keepdim=True)
        weight = weight.reshape(batch, classes * templates, dim, size, size)
        bias = params[..., -1].reshape(batch, classes * templates)
        out = per_sample_conv(image, weight, bias)
        return out.view(batch, classes, templates, *out.shape[-2:]).transpose(1, 2)


class AlignmentProjector(nn.Module):
    """Text-conditioned projector of the alignment loss (the original `Projector`).

    Upsamples the dense CLIP features x4 to a `dim / 2`-channel map and convolves it with one k x k kernel per
    class generated from the refined text embedding. Its output only feeds the alignment loss.
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        half = dim // 2
        self.kernel_size = kernel_size
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, half, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1)
        self.text_to_kernel = nn.Linear(dim, half * kernel_size * kernel_size + 1)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """image `(batch, dim, h, w)`, text `(batch, classes, dim)` -> `(batch, classes, 4h, 4w)`."""
        x = F.interpolate(image_features, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.conv3(x)
        batch, channels = x.shape[:2]
        classes = text_features.shape[1]
        params = self.text_to_kernel(text_features)
        size = self.kernel_size
        weight = params[..., :-1].reshape(batch, classes, channels, size, size)
        return per_sample_conv(x, weight, params[..., -1])
