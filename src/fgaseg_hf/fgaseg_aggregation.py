"""Cost aggregation of FGA-Seg: spatial (shifted-window) and class (linear or full attention) aggregation.

Cost volumes are laid out `(batch, classes, height, width, channels)` here: every class of every image is an
independent map for the spatial blocks, and every pooled pixel an independent sequence of classes for the class
blocks. Guidance that is shared by all classes of an image enters the q/k projections once per image (the
projection of `[x, guidance]` is split into its two halves), instead of being repeated for every class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def run_in_class_chunks(function, tensors: Sequence[torch.Tensor], chunk_size: int) -> torch.Tensor:
    """`function(*parts)` over slices of the class axis of `tensors` (each `(B, T, ...)`), each slice holding at most
    `chunk_size` (image, class) maps, gathered into one `(B, T, ...)` output. `function` must treat classes
    independently and return `(B, t, ...)` for `t` classes in.

    Runs in one piece when `chunk_size` is 0 or the maps fit, when autograd records (activations are kept for the
    backward anyway; gradient checkpointing is the tool there), and while torch.compile traces (the class count is
    symbolic)."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled() or chunk_size <= 0:
        return function(*tensors)
    batch, classes = tensors[0].shape[:2]
    step = max(1, chunk_size // batch)
    if step >= classes:
        return function(*tensors)
    out = None
    for start in range(0, classes, step):
        part = function(*(t[:, start : start + step] for t in tensors))
        if out is None:
            out = part.new_empty(batch, classes, *part.shape[2:])
        out[:, start : start + step] = part
    return out


def split_linear(x: torch.Tensor, guidance: torch.Tensor | None, layer: nn.Linear) -> torch.Tensor:
    """`layer(cat([x, guidance], -1))` with `guidance` broadcastable to `x`'s leading dims."""
    width = x.shape[-1]
    out = F.linear(x, layer.weight[:, :width])
    if guidance is None:
        return out + layer.bias
    return out + F.linear(guidance, layer.weight[:, width:], layer.bias)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """`(..., H, W, C)` -> `(..., num_windows, window * window, C)`, windows in row-major order."""
    *lead, height, width, channels = x.shape
    x = x.reshape(*lead, height // window, window, width // window, window, channels)
    x = x.transpose(-4, -3)
    return x.reshape(*lead, (height // window) * (width // window), window * window, channels)


def window_merge(x: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`."""
    *lead, _, _, channels = x.shape
    x = x.reshape(*lead, height // window, width // window, window, window, channels)
    x = x.transpose(-4, -3)
    return x.reshape(*lead, height, width, channels)


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Additive mask `(num_windows, 1, N, N)`: -100 between tokens from different regions of the rolled map."""
    regions = torch.zeros(height, width, device=device)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[rows, cols] = count
            count += 1
    windows = window_partition(regions[..., None], window).squeeze(-1)
    mask = windows[:, None, :] - windows[:, :, None]
    mask = torch.zeros_like(mask).masked_fill(mask != 0, -100.0)
    return mask[:, None]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: type[nn.Module]):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttentionBlock(nn.Module):
    """Swin block whose queries and keys also see the appearance guidance (values do not)."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, nn.GELU)
        self._cache: dict = {}

    def _geometry(self, height, width, device, dtype):
        """`(order, inverse, mask)`: token positions (row-major over the map) in rolled-window order, the inverse
        permutation, and the shifted-window mask `(windows, 1, N, N)` (None without shift)."""
        key = (height, width, device, dtype)
        cache = self._cache  # read once: another thread may replace it meanwhile
        if key not in cache:
            index = torch.arange(height * width, device=device).view(height, width)
            if self.shift:
                index = torch.roll(index, (-self.shift, -self.shift), dims=(0, 1))
            order = window_partition(index[..., None], self.window).flatten()
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=device)
            mask = shifted_window_mask(height, width, self.window, self.shift, device).to(dtype) if self.shift else None
            cache = self._cache = {key: (order, inverse, mask)}
        return cache[key]

    def _attend(self, q, k, v, mask):
        """Multi-head attention within windows: q, k, v `(L, windows, N, C)`, mask `(windows, 1, N, N)` or None ->
        `(L, windows, N, C)`. 4-D strided views reach PyTorch's fused kernel (inputs with more dimensions fall back
        to a reference path ~6x slower here), one call per window when masked so that its mask broadcasts: no
        tensor is copied to feed it."""
        lead, windows, tokens, channels = q.shape
        heads = self.num_heads
        split = lambda t: t.view(lead * windows, tokens, heads, -1).transpose(1, 2)  # noqa: E731  (L*W, H, N, d)
        if mask is None:
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))
            return out.transpose(1, 2).reshape(lead, windows, tokens, channels)
        out = q.new_empty(lead, windows, tokens, heads, channels // heads)
        q, k, v = (split(t).unflatten(0, (lead, windows)) for t in (q, k, v))
        for window in range(windows):
            attended = F.scaled_dot_product_attention(
                q[:, window], k[:, window], v[:, window], attn_mask=mask[window : window + 1]
            )
            out[:, window] = attended.transpose(1, 2)
        return out.view(lead, windows, tokens, channels)

    def _forward_with_gradients(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """The same block for training: roll, window partition and 6-D attention, whose backward is ~1.6x faster on
        CPU than that of the inference path's gathers and fused kernel."""
        height, width = x.shape[2:4]
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(2, 3))
            if guidance is not None:
                guidance = torch.roll(guidance, (-self.shift, -self.shift), dims=(1, 2))
        h = window_partition(h, self.window)
        g = window_partition(guidance, self.window)[:, None] if guidance is not None else None
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # noqa: E731
        q, k, v = heads(split_linear(h, g, self.q)), heads(split_linear(h, g, self.k)), heads(self.v(h))
        mask = self._geometry(height, width, x.device, q.dtype)[2]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = window_merge(self.proj(out.transpose(-3, -2).flatten(-2)), self.window, height, width)
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), dims=(2, 3))
        x = x + out
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """x `(B, T, H, W, C)`, guidance `(B, H, W, G)` (normalised) -> `(B, T, H, W, C)`."""
        if torch.is_grad_enabled() and (x.requires_grad or self.q.weight.requires_grad):
            return self._forward_with_gradients(x, guidance)
        batch, classes, height, width, channels = x.shape
        order, inverse, _ = self._geometry(height, width, x.device, x.dtype)
        windows = order.numel() // (self.window * self.window)
        # Shift and window partition are one permutation of the map's positions: a single gather.
        h = self.norm1(x).flatten(2, 3).index_select(2, order).view(batch * classes, windows, -1, channels)
        # q, k and v of the cost features in one matrix product; the guidance halves of q and k are computed once
        # per image and added in place to every class.
        weight = torch.cat([self.q.weight[:, :channels], self.k.weight[:, :channels], self.v.weight])
        qkv = F.linear(h, weight, torch.cat([self.q.bias, self.k.bias, self.v.bias]))
        if guidance is not None:
            g = guidance.flatten(1, 2).index_select(1, order).view(batch, 1, windows, -1, guidance.shape[-1])
            qk_guidance = F.linear(g, torch.cat([self.q.weight[:, channels:], self.k.weight[:, channels:]]))
            qkv.view(batch, classes, windows, -1, 3 * channels)[..., : 2 * channels] += qk_guidance
        q, k, v = qkv.split(channels, dim=-1)
        mask = self._geometry(height, width, x.device, q.dtype)[2]
        out = self.proj(self._attend(q, k, v, mask))
        out = out.view(batch, classes, -1, channels).index_select(2, inverse).view(batch, classes, height, width, channels)
        x = out.add_(x)
        # The MLP's large intermediate is updated in place: a fresh buffer of that size costs page faults on CPU.
        hidden = self.mlp.fc1(self.norm2(x))
        exact_gelu = isinstance(self.mlp.act, nn.GELU) and self.mlp.act.approximate == "none"
        hidden = torch.ops.aten.gelu_(hidden) if exact_gelu else self.mlp.act(hidden)
        return self.mlp.fc2(hidden).add_(x)


class SpatialAggregation(nn.Module):
    """Two Swin blocks (plain, then shifted by half a window) over each class's cost map (`SwinTransformerBlockWrapper`)."""

    def __init__(self, dim: int, guidance_dim: int, resolution: int, num_heads: int, window: int):
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        else:
            shift = window // 2
        self.block_1 = WindowAttentionBlock(dim, guidance_dim, num_heads, window, 0)
        self.block_2 = WindowAttentionBlock(dim, guidance_dim, num_heads, window, shift)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        if guidance is not None:
            guidance = self.guidance_norm(guidance)
        return self.block_2(self.block_1(x, guidance), guidance)


def linear_attention(q, k, v, weights, length, eps: float = 1e-6):
    """Kernelised attention of "Transformers are RNNs" (elu + 1 feature map) with per-key multiplicities.

    q, k, v: `(N, heads, S, d)`; weights `(N, 1, S, 1)` multiplicity of each key (0 drops it); length `(N, 1, 1, 1)`
    the sequence length the values are scaled by (the original divides and multiplies back to avoid fp16 overflow).
    Computed in float32.
    """
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    q = F.elu(q) + 1
    k = (F.elu(k) + 1) * weights
    v = v / length
    kv = k.transpose(-2, -1) @ v
    normaliser = 1.0 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + eps)
    return ((q @ kv) * normaliser * length).to(dtype)


class ClassAggregation(nn.Module):
    """Attention across classes at every (pooled) pixel (`ClassTransformerLayer`).

    The class axis is padded with a learned token up to `pad_len` entries, as in the original; the padding
    entries are identical, so one padding token carrying their count as its multiplicity is attended instead.
    A per-image class mask drops classes pruned for that image without changing the tensors' shapes.
    """

    def __init__(self, dim, guidance_dim, num_heads, attention_type, pooling_size, pad_len):
        super().__init__()
        self.num_heads, self.attention_type, self.pad_len = num_heads, attention_type, pad_len
        self.pooling_size = tuple(pooling_size) if pooling_size is not None else None
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.padding_token = nn.Parameter(torch.zeros(dim)) if pad_len > 0 else None
        self.padding_guidance = nn.Parameter(torch.zeros(guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None, class_mask: torch.Tensor | None) -> torch.Tensor:
        """
        Args:
            x: `(B, T, H, W, C)`.
            guidance: `(B, T, G)` projected text guidance.
            class_mask: `(B, T)` bool, classes that take part for each image (None: all).
        Returns:
            `(B, T, H, W, C)`.
        """
        batch, classes, height, width, channels = x.shape
        pooled = x
        if self.pooling_size is not None and self.pooling_size != (1, 1):
            pooled = F.avg_pool2d(x.permute(0, 1, 4, 2, 3).flatten(0, 1), self.pooling_size)
            pooled = pooled.unflatten(0, (batch, classes)).permute(0, 1, 3, 4, 2)
        ph, pw = pooled.shape[2:4]
        counts = class_mask.sum(dim=1) if class_mask is not None else x.new_full((batch,), classes, dtype=torch.long)
        weights = class_mask.to(x.dtype) if class_mask is not None else x.new_ones(batch, classes)
        tokens = pooled.permute(0, 2, 3, 1, 4)  # B, h, w, T, C
        if self.padding_token is not None:
            pad_count = (self.pad_len - counts).clamp(min=0)
            tokens = torch.cat([tokens, self.padding_token.to(x.dtype).expand(batch, ph, pw, 1, channels)], dim=3)
            weights = torch.cat([weights, pad_count[:, None].to(x.dtype)], dim=1)
            if guidance is not None:
                pad_guidance = self.padding_guidance.to(guidance.dtype).expand(batch, 1, guidance.shape[-1])
                guidance = torch.cat([guidance, pad_guidance], dim=1)
        length = weights.sum(dim=1)
        normed = self.norm1(tokens)
        g = guidance[:, None, None] if guidance is not None else None  # B, 1, 1, S, G
        q = split_linear(normed, g, self.q)
        k = split_linear(normed, g, self.k)
        v = self.v(normed)
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # noqa: E731  B,h,w,H,S,d
        q, k, v = heads(q), heads(k), heads(v)
        if self.attention_type == "linear":
            out = linear_attention(q, k, v, weights[:, None, None, None, :, None], length[:, None, None, None, None, None])
        else:
            bias = weights.log()[:, None, None, None, None, :]  # multiplicity as an additive log-weight
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        tokens = tokens + out.transpose(-3, -2).flatten(-2)
        tokens = tokens + self.mlp(self.norm2(tokens))
        tokens = tokens[..., :classes, :].permute(0, 3, 4, 1, 2)  # B, T, C, h, w
        if (ph, pw) != (height, width):
            tokens = F.interpolate(tokens.flatten(0, 1), size=(height, width), mode="bilinear", align_corners=True)
            tokens = tokens.unflatten(0, (batch, classes))
        return x + tokens.permute(0, 1, 3, 4, 2)


class CostAggregationLayer(nn.Module):
    """Spatial then class aggregation (`Decoder_fastLayer` / `DecoderLayer`)."""

    def __init__(self, config, resolution: int):
        super().__init__()
        self.swin_block = SpatialAggregation(
            config.hidden_dim, config.appearance_guidance_proj_dim, resolution, config.num_attention_heads, config.window_size
        )
        self.class_attention = ClassAggregation(
            config.hidden_dim,
            config.text_guidance_proj_dim,
            config.num_attention_heads,
            config.class_attention_type,
            config.pooling_size,
            config.class_aggregation_length,
        )

    def forward(self, x, appearance_guidance, text_guidance, class_mask=None, chunk_size: int = 0):
        """`chunk_size`: see `run_in_class_chunks` (the spatial blocks treat every class alone; the class attention
        mixes them and runs whole)."""
        x = run_in_class_chunks(lambda part: self.swin_block(part, appearance_guidance), (x,), chunk_size)
        return self.class_attention(x, text_guidance, class_mask)
