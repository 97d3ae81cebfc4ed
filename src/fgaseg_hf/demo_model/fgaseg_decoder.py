"""FGA-Seg's cost-volume decoder: global and local costs -> embedding -> aggregation -> guided upsampling.

One class serves the original's two decoders: `Decoder_fast` ("fast": auxiliary heads after each fusion and
top-k class pruning at inference) and `Decoder` ("no_fast"); without the local cost (`use_local_alignment=False`)
it is CAT-Seg's `Aggregator`: global cost -> embedding -> aggregation -> guided upsampling, nothing fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fgaseg_aggregation import CostAggregationLayer, run_in_class_chunks
from .fgaseg_alignment import LocalAlignment

# Logit given to classes that were pruned or truncated (sigmoid of it is 0 in float32, as in the original).
PRUNED_LOGIT = -100.0


class DoubleConv(nn.Module):
    """(3x3 conv without bias -> GroupNorm(width / 16 groups) -> ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(out_channels // 16, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(out_channels // 16, out_channels)

    def forward(self, x, shared: torch.Tensor | None = None, repeats: int = 1):
        """`shared` (per image) joins `x` (per image and class) as extra input channels of the first conv."""
        in_x = x.shape[1]
        x = F.conv2d(x, self.conv1.weight[:, :in_x], padding=1)
        if shared is not None:
            # conv(cat[x, g]) = conv_x(x) + conv_g(g): the guidance half is convolved once per image, then added in
            # place to the fresh conv output (its backward does not need it), in x's memory layout (a broadcast
            # add across layouts is ~2x slower).
            g = F.conv2d(shared, self.conv1.weight[:, in_x:], padding=1)
            channels_last = x.is_contiguous(memory_format=torch.channels_last)
            g = g.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            x.unflatten(0, (g.shape[0], repeats)).add_(g[:, None])
        # In place: the normalised maps are fresh tensors that GroupNorm's backward does not need.
        x = F.relu_(self.norm1(x))
        return F.relu_(self.norm2(self.conv2(x)))


class UpsamplingStage(nn.Module):
    """Transposed conv x2, then concatenation with projected CLIP guidance and a DoubleConv (the original `Up`)."""

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor | None, repeats: int) -> torch.Tensor:
        """x `(B * T, C, h, w)`, guidance `(B, G, 2h, 2w)` -> `(B * T, out, 2h, 2w)`."""
        return self.conv(self.up(x), guidance, repeats)


class ScoreHead(nn.Conv2d):
    """3x3 convolution from C channels to one score map per (image, class) `(N, C, H, W)` -> `(N, 1, H, W)`.

    Without gradients on CPU it runs as one matrix product from the channels to the 9 kernel taps followed by a sum
    of the shifted tap maps: oneDNN's kernel for a single output channel is about 5x slower than that here. The
    result differs from the convolution only in summation order (~1e-6)."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        batch, channels, height, width = x.shape
        weight = self.weight.to(x.dtype).view(channels, 9).t()
        taps = torch.matmul(weight, x.reshape(batch, channels, height * width)).view(batch, 3, 3, height, width)
        out = taps[:, 1, 1] + self.bias.to(x.dtype)
        for row in range(3):
            for col in range(3):
                dy, dx = row - 1, col - 1
                if dy or dx:
                    out[:, max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)] += taps[
                        :, row, col, max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)
                    ]
        return out[:, None]


@dataclass
class DecoderOutput:
    logits: torch.Tensor
    auxiliary_logits: tuple[torch.Tensor, ...] | None = None
    kept_classes: torch.Tensor | None = None
    correlation: torch.Tensor | None = None
    local_correlation: torch.Tensor | None = None


class ClassSelection:
    """Which classes each image still carries: `ids` `(B, U)` indexes into the full vocabulary (per image, because
    truncation is per image), `mask` `(B, U)` which of them are alive for that image."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor | None):
        self.ids, self.mask = ids, mask

    def prune(
        self, aux_logits: torch.Tensor, top_k: int, groups: torch.Tensor | None
    ) -> tuple["ClassSelection", torch.Tensor]:
        """Keep the classes among every pixel's `top_k` highest auxiliary logits; returns the new selection and, per
        image, the positions (into the current `U`) that stay, `(B, U')`: each image's kept classes in their order,
        padded to the largest count with classes it does not keep (masked out). An image's cost therefore follows
        its own classes, not the union over the batch.

        `groups` `(B,)` pools the decision over images with the same group id (the views of one image in sliding-
        window inference, or the whole batch as the original does); `None` decides per image."""
        batch, classes = aux_logits.shape[:2]
        scores = aux_logits.detach()
        if self.mask is not None:
            scores = scores.masked_fill(~self.mask[:, :, None, None], float("-inf"))
        top = scores.topk(min(top_k, classes), dim=1).indices.flatten(1)
        hit = torch.zeros(batch, classes, dtype=torch.bool, device=aux_logits.device).scatter_(1, top, True)
        if self.mask is not None:
            hit &= self.mask
        if groups is not None:
            pooled = torch.zeros(int(groups.max()) + 1, classes, device=hit.device).index_add_(0, groups, hit.float())
            hit = pooled[groups] > 0
        counts = hit.sum(dim=1)
        kept = counts.max().item()
        # At least one class per pixel survives; telling the compiler so lets the pruned size stay symbolic.
        torch._check(kept >= 1)
        torch._check(kept <= classes)
        # Kept positions first, each part in ascending order (a stable sort of "not kept").
        keep = torch.sort((~hit).to(torch.uint8), dim=1, stable=True).indices[:, :kept]
        alive = torch.arange(keep.shape[1], device=hit.device)[None] < counts[:, None]
        return ClassSelection(self.ids.gather(1, keep), alive), keep


def take_classes(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the classes `keep` `(B, U')` of `x` `(B, U, ...)` -> `(B, U', ...)`."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], keep]


class CostAggregationDecoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden, half = config.hidden_dim, config.hidden_dim // 2
        templates = config.num_templates
        self.decoder_mode = config.decoder_mode
        self.fusion_mode = config.fusion_mode
        self.pad_len = config.class_aggregation_length
        self.top_k = config.inference_top_k
        self.top_k_scope = config.top_k_scope
        self.chunk_size = config.inference_chunk_size
        resolution = config.feature_resolution

        self.use_local = getattr(config, "use_local_alignment", True)
        # Registration order as before the switch existed: seeded initialisations stay the same.
        if self.use_local:
            self.local_alignment = LocalAlignment(config.projection_dim, config.local_alignment_kernel_size)
        self.global_embed = nn.Conv2d(templates, hidden, kernel_size=7, padding=3)
        if self.use_local:
            self.local_embed = nn.Conv2d(templates, hidden, kernel_size=7, padding=3)
            if self.fusion_mode == "cat":
                self.fuse_embed = nn.Linear(2 * hidden, hidden)
                self.fuse_stage1 = nn.Linear(2 * hidden, hidden)
                self.fuse_stage2 = nn.Linear(hidden, half)
            self.local_upsample = nn.ConvTranspose2d(hidden, half, kernel_size=2, stride=2)
            self.local_upsample_conv = DoubleConv(half, half)

        self.appearance_guidance_projection = (
            nn.Conv2d(config.appearance_guidance_in_dim, config.appearance_guidance_proj_dim, 3, padding=1)
            if config.appearance_guidance_in_dim > 0
            else None
        )
        self.text_guidance_projection = (
            nn.Linear(config.text_guidance_in_dim, config.text_guidance_proj_dim) if config.text_guidance_in_dim > 0 else None
        )
        self.decoder_guidance_projection = nn.ModuleList(
            nn.Conv2d(d, p, 3, padding=1) for d, p in zip(config.decoder_guidance_dims, config.decoder_guidance_proj_dims)
        )
        self.layers = nn.ModuleList(CostAggregationLayer(config, resolution) for _ in range(config.num_aggregation_layers))
        self.decoder1 = UpsamplingStage(hidden, config.decoder_dims[0], config.decoder_guidance_proj_dims[0])
        self.decoder2 = UpsamplingStage(config.decoder_dims[0], config.decoder_dims[1], config.decoder_guidance_proj_dims[1])
        self.head = ScoreHead(config.decoder_dims[1])
        if self.decoder_mode == "fast":
            self.aux_head0 = ScoreHead(hidden)
            self.aux_head1 = ScoreHead(hidden)
            self.aux_head2 = ScoreHead(half)
        self.gradient_checkpointing = False

    # ----------------------------------------------------------------- pieces
    @staticmethod
    def correlation(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine cost `(B, P, T, h, w)` between image `(B, C, h, w)` and text `(B, T, P, C)`."""
        return torch.einsum("bchw,btpc->bpthw", F.normalize(image, dim=1), F.normalize(text, dim=-1))

    @staticmethod
    def _embed(conv: nn.Conv2d, cost: torch.Tensor) -> torch.Tensor:
        """Per-class 7x7 conv of a `(B, P, T, h, w)` cost -> `(B, T, h, w, hidden)`."""
        batch, _, classes = cost.shape[:3]
        x = conv(cost.transpose(1, 2).flatten(0, 1))
        return x.unflatten(0, (batch, classes)).permute(0, 1, 3, 4, 2)

    def _fuse(self, layer_name: str, x: torch.Tensor, local: torch.Tensor | None, channel_dim: int) -> torch.Tensor:
        if local is None:  # no local cost: nothing to fuse
            return x
        if self.fusion_mode == "add":
            return x + local
        layer = getattr(self, layer_name)
        if channel_dim == -1:
            return layer(torch.cat([x, local], dim=-1))
        return layer(torch.cat([x, local], dim=1).movedim(1, -1)).movedim(-1, 1)

    @staticmethod
    def _aux(head: ScoreHead, x: torch.Tensor, batch: int) -> torch.Tensor:
        """3x3 conv head on `(B * T, C, h, w)` -> `(B, T, h, w)`."""
        return head(x).squeeze(1).unflatten(0, (batch, -1))

    @staticmethod
    def _take(x: torch.Tensor, keep: torch.Tensor, batch: int, classes: int) -> torch.Tensor:
        """Keep, per image, classes `keep` `(B, U')` of a `(B * T, ...)` per-(image, class) tensor."""
        return take_classes(x.unflatten(0, (batch, classes)), keep).flatten(0, 1)

    @staticmethod
    def _to_vocabulary(logits: torch.Tensor, selection: "ClassSelection", num_classes: int) -> torch.Tensor:
        """Scatter `(B, U, H, W)` logits of the selected classes into `(B, num_classes, H, W)`; the rest get PRUNED_LOGIT."""
        if selection.mask is None and selection.ids.shape[1] == num_classes:
            return logits
        if selection.mask is not None:
            logits = logits.masked_fill(~selection.mask[:, :, None, None], PRUNED_LOGIT)
        full = logits.new_full((logits.shape[0], num_classes, *logits.shape[-2:]), PRUNED_LOGIT)
        return full.scatter(1, selection.ids[:, :, None, None].expand_as(logits), logits)

    def _run_layers(self, x, appearance, text_guidance, class_mask):
        for layer in self.layers:
            x = self._checkpointed(layer)(x, appearance, text_guidance, class_mask, self.chunk_size)
        return x

    def _checkpointed(self, function):
        """`function` under activation checkpointing when it is on and training (the aggregation layers and the
        upsampling stages, whose per-class maps at 2x and 4x the feature resolution are most of the activations kept
        for the backward)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return lambda *args: torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
        return function

    def _upsample_stage1(self, x, local_x, guidance):
        """Per class: upsampling stage 1 of the cost `(B, t, C, h, w)`, upsampling of the local cost, and their
        fusion -> `(B, t, C', 2h, 2w)`."""
        batch, classes = x.shape[:2]
        x = self.decoder1(x.flatten(0, 1), guidance, classes)
        if local_x is None:
            return x.unflatten(0, (batch, classes))
        local_x = F.relu(self.local_upsample_conv(self.local_upsample(local_x.flatten(0, 1))))
        return self._fuse("fuse_stage2", x, local_x, channel_dim=1).unflatten(0, (batch, classes))

    def _upsample_stage2(self, x, guidance):
        """Per class: upsampling stage 2 and the score head, `(B, t, C, h, w)` -> logits `(B, t, 2h, 2w)`."""
        batch, classes = x.shape[:2]
        return self._aux(self.head, self.decoder2(x.flatten(0, 1), guidance, classes), batch)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        guidance: list[torch.Tensor],
        prune: bool,
        output_correlations: bool = False,
        pruning_groups: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """
        Args:
            image_features: `(B, C, h, w)` dense CLIP features.
            text_features: `(B, T, P, C)` refined text embeddings.
            guidance: `[appearance (B, C, h, w), stage-1 (B, G0, 2h, 2w), stage-2 (B, G1, 4h, 4w)]`.
            prune: apply the fast decoder's top-k class pruning (inference).
            pruning_groups: `(B,)` group id of each image; pruning pools over a group. `None` follows
                `top_k_scope` ("image": each image alone; "batch": the whole batch, as the original).
        Returns:
            `DecoderOutput` with logits `(B, T, 4h, 4w)`; pruned and truncated classes hold `PRUNED_LOGIT`.
        """
        batch, num_classes = text_features.shape[:2]
        device = image_features.device
        if pruning_groups is None and self.top_k_scope == "batch":
            pruning_groups = torch.zeros(batch, dtype=torch.long, device=device)
        ids = torch.arange(num_classes, device=device).expand(batch, -1)
        selection = ClassSelection(ids, None)
        if self.pad_len > 0 and num_classes > self.pad_len:
            # Keep the pad_len classes whose best pixel is most CLIP-similar (per image).
            score = self.correlation(image_features, text_features).amax(dim=(1, 3, 4))
            chosen = score.topk(self.pad_len, dim=-1).indices.sort(dim=-1).values
            text_features = torch.gather(
                F.normalize(text_features, dim=-1), 1, chosen[:, :, None, None].expand(-1, -1, *text_features.shape[2:])
            )
            selection = ClassSelection(chosen, None)

        corr = self.correlation(image_features, text_features)
        local = self.local_alignment(image_features, text_features) if self.use_local else None
        x = self._embed(self.global_embed, corr)
        local_x = self._embed(self.local_embed, local) if self.use_local else None

        appearance = guidance[0]
        if self.appearance_guidance_projection is not None:
            appearance = F.relu(self.appearance_guidance_projection(appearance)).permute(0, 2, 3, 1)
        else:
            appearance = None
        stage_guidance = [F.relu(proj(g)) for proj, g in zip(self.decoder_guidance_projection, guidance[1:])]
        text_guidance = None
        if self.text_guidance_projection is not None:
            text_guidance = F.relu(self.text_guidance_projection(F.normalize(text_features.mean(dim=-2), dim=-1)))

        fast = self.decoder_mode == "fast"
        prune = prune and fast
        aux = []

        # Fusion 0 + aggregation (B, T, h, w, C).
        x = self._fuse("fuse_embed", x, local_x, channel_dim=-1)
        if fast:
            aux.append(self._aux(self.aux_head0, x.flatten(0, 1).permute(0, 3, 1, 2), batch))
            if prune:
                selection, keep = selection.prune(aux[-1], self.top_k, pruning_groups)
                x = take_classes(x, keep)
                local_x = take_classes(local_x, keep) if local_x is not None else None
                text_guidance = take_classes(text_guidance, keep) if text_guidance is not None else None
        x = self._run_layers(x, appearance, text_guidance, selection.mask)

        # Fusion 1, then per class: upsampling stage 1 and fusion 2 with the upsampled local cost (B * T, C, h, w).
        classes = x.shape[1]
        x = x.flatten(0, 1).permute(0, 3, 1, 2)
        local_x = local_x.flatten(0, 1).permute(0, 3, 1, 2) if local_x is not None else None
        x = self._fuse("fuse_stage1", x, local_x, channel_dim=1)
        if fast:
            aux.append(self._aux(self.aux_head1, x, batch))
            if prune:
                selection, keep = selection.prune(aux[-1], self.top_k, pruning_groups)
                x = self._take(x, keep, batch, classes)
                local_x = self._take(local_x, keep, batch, classes) if local_x is not None else None
                classes = keep.shape[1]
        if local_x is None:
            x = run_in_class_chunks(
                self._checkpointed(lambda x: self._upsample_stage1(x, None, stage_guidance[0])),
                (x.unflatten(0, (batch, classes)),),
                self.chunk_size,
            ).flatten(0, 1)
        else:
            x = run_in_class_chunks(
                self._checkpointed(lambda x, local_x: self._upsample_stage1(x, local_x, stage_guidance[0])),
                (x.unflatten(0, (batch, classes)), local_x.unflatten(0, (batch, classes))),
                self.chunk_size,
            ).flatten(0, 1)

        # Auxiliary head 2 on the fused maps; upsampling stage 2 and the score head.
        if fast:
            aux.append(self._aux(self.aux_head2, x, batch))
            if prune:
                selection, keep = selection.prune(aux[-1], self.top_k, pruning_groups)
                x = self._take(x, keep, batch, classes)
                classes = keep.shape[1]
        logits = run_in_class_chunks(
            self._checkpointed(lambda x: self._upsample_stage2(x, stage_guidance[1])),
            (x.unflatten(0, (batch, classes)),),
            self.chunk_size,
        )

        logits = self._to_vocabulary(logits, selection, num_classes)
        if fast and not prune:
            aux = [self._to_vocabulary(a, selection, num_classes) for a in aux]
        kept = torch.zeros(batch, num_classes, dtype=torch.bool, device=device)
        alive = selection.mask if selection.mask is not None else torch.ones_like(selection.ids, dtype=torch.bool)
        kept.scatter_(1, selection.ids, alive)
        return DecoderOutput(
            logits=logits,
            auxiliary_logits=tuple(aux) if fast and not prune else None,
            kept_classes=kept,
            correlation=corr if output_correlations else None,
            local_correlation=local if output_correlations else None,
        )
