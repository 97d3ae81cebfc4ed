"""FC-CLIP / ITA inference steps: geometric ensemble of the in- and out-of-vocabulary classifiers, and semantic
segmentation from mask classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def geometric_ensemble(
    pred_logits: torch.Tensor,
    out_vocab_logits: torch.Tensor,
    seen_mask: torch.Tensor,
    alpha: float,
    beta: float,
    valid_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ensembled per-query class log-probabilities (B, Q, K + 1), void last.

    Args:
        pred_logits: (B, Q, K + 1) decoder class logits (void last).
        out_vocab_logits: (B, Q, K) CLIP logits of the mask-pooled dense features (void removed).
        seen_mask: (K,) bool, classes that share a synonym with a training class (weight `alpha`), else `beta`.
        valid_masks: (B, Q) bool, optional: queries whose mask covers no CLIP position get no CLIP vote
            (FC-CLIP's ENSEMBLE_ON_VALID_MASK).
    """
    p_in = pred_logits[..., :-1].softmax(-1)
    p_out = out_vocab_logits.softmax(-1)
    if valid_masks is not None:
        valid = valid_masks.to(p_in.dtype).unsqueeze(-1)
        alpha = torch.ones_like(p_in) * alpha * valid
        beta = torch.ones_like(p_in) * beta * valid
    seen = (p_in ** (1 - alpha) * p_out**alpha).log()
    unseen = (p_in ** (1 - beta) * p_out**beta).log()
    combined = torch.where(seen_mask.to(torch.bool), seen, unseen)
    # The decoder's void probability is kept; the ensemble only redistributes the non-void mass.
    void = F.softmax(pred_logits, dim=-1)[..., -1:]
    probs = torch.cat([combined.softmax(-1) * (1.0 - void), void], dim=-1)
    return torch.log(probs + 1e-8)


def semantic_inference(mask_cls: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """One image: (Q, K + 1) class log-probs and (Q, H, W) mask logits -> (K, H, W) class scores."""
    return torch.einsum("qc,qhw->chw", F.softmax(mask_cls, dim=-1)[..., :-1], mask_logits.sigmoid())


def crop_and_resize(maps: torch.Tensor, image_size: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) on the padded canvas -> the image's top-left `image_size` region, bilinearly resized to `output_size`."""
    cropped = maps[:, : image_size[0], : image_size[1]]
    return F.interpolate(cropped[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]


def canvas_scores(mask_cls: torch.Tensor, mask_logits: torch.Tensor, canvas_size: tuple[int, int]):
    """Masks (B, Q, H/4, W/4) upsampled bilinearly to the padded canvas, and the per-image class scores there
    (B, K, H, W). Returns (scores, upsampled masks)."""
    masks = F.interpolate(mask_logits, size=tuple(canvas_size), mode="bilinear", align_corners=False)
    return torch.stack([semantic_inference(cls, mask) for cls, mask in zip(mask_cls, masks)]), masks


def final_maps(mask_cls, upsampled_masks, scores, image_sizes, output_sizes, order: str = "after") -> list[torch.Tensor]:
    """Per-image semantic scores (K, h_out, w_out): "after" crops and resizes the canvas scores (the original with
    SEMANTIC_ON only); "before" crops and resizes the masks, then takes the class x mask product (the original's
    order when panoptic or instance inference is on)."""
    if order == "before":
        return [semantic_inference(c, crop_and_resize(m, s, o)) for c, m, s, o in zip(mask_cls, upsampled_masks, image_sizes, output_sizes)]
    return [crop_and_resize(r, s, o) for r, s, o in zip(scores, image_sizes, output_sizes)]


def semantic_maps(
    mask_cls: torch.Tensor,
    mask_logits: torch.Tensor,
    canvas_size: tuple[int, int],
    image_sizes: list[tuple[int, int]],
    output_sizes: list[tuple[int, int]] | None = None,
    order: str = "after",
) -> list[torch.Tensor]:
    """Per-image semantic scores from (B, Q, K + 1) class log-probs and (B, Q, H/4, W/4) mask logits: masks go to
    the padded `canvas_size`, then each image is cropped to its `image_sizes` entry and resized to its output size
    (default: the image size), in the given order (see `final_maps`)."""
    scores, masks = canvas_scores(mask_cls, mask_logits, canvas_size)
    return final_maps(mask_cls, masks, scores, image_sizes, output_sizes or image_sizes, order)


__all__ = ["canvas_scores", "crop_and_resize", "final_maps", "geometric_ensemble", "semantic_inference", "semantic_maps"]
