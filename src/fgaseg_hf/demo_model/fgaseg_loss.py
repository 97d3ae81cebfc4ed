"""FGA-Seg's training loss: per-class binary cross-entropy on the final, auxiliary and alignment logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_vs_all_bce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, ignore_mode: str) -> torch.Tensor:
    """Mean BCE-with-logits of `(B, T, H, W)` logits against one-hot targets of `(B, H, W)` labels.

    Equals `binary_cross_entropy_with_logits(logits, one_hot(labels))` without building the one-hot tensor:
    BCE(x, y) = softplus(x) - x * y, and y is 1 only at the labelled class.
    "original": ignore pixels are all-zero targets and count in the mean (the published training).
    "masked": ignore pixels are left out.
    """
    logits = logits.float()
    classes = logits.shape[1]
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    positive = torch.gather(logits, 1, target[:, None]).squeeze(1)
    softplus = F.softplus(logits)
    # Zeros instead of boolean indexing: the same sums without a data-dependent shape (one graph for torch.compile).
    positive_sum = torch.where(valid, positive, 0.0).sum()
    if ignore_mode == "masked":
        count = valid.sum() * classes
        total = torch.where(valid, softplus.sum(dim=1), 0.0).sum() - positive_sum
        return total / count.clamp(min=1)
    return (softplus.sum() - positive_sum) / logits.numel()


class FGASegLoss(nn.Module):
    """total = main + sum_i w_i * aux_i + alignment_weight * alignment (fast decoder), main + alignment term (no_fast).

    Main and auxiliary logits are upsampled bilinearly to the label size; the alignment logits are compared with
    the labels resized (nearest) to their own size.
    """

    def __init__(self, config):
        super().__init__()
        self.ignore_index = config.ignore_index
        self.ignore_mode = config.loss_ignore_mode
        self.auxiliary_weights = list(config.auxiliary_loss_weights)
        self.alignment_weight = config.alignment_loss_weight

    def _resize(self, logits, size):
        if logits.shape[-2:] == size:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, logits, auxiliary_logits, alignment_logits, labels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = labels.shape[-2:]
        bce = lambda x, y: one_vs_all_bce(x, y, self.ignore_index, self.ignore_mode)  # noqa: E731
        terms = {"loss_main": bce(self._resize(logits, size), labels)}
        if alignment_logits is not None:
            align_size = alignment_logits.shape[-2:]
            align_labels = labels
            if align_size != size:
                align_labels = F.interpolate(labels[:, None].float(), size=align_size, mode="nearest")[:, 0].long()
            terms["loss_align"] = bce(alignment_logits, align_labels)
        total = terms["loss_main"]
        # Summed in the original's order: main, auxiliary terms, alignment.
        if auxiliary_logits is not None:
            for index, (aux, weight) in enumerate(zip(auxiliary_logits, self.auxiliary_weights)):
                terms[f"loss_aux{index}"] = bce(self._resize(aux, size), labels)
                total = total + weight * terms[f"loss_aux{index}"]
        if "loss_align" in terms:
            total = total + self.alignment_weight * terms["loss_align"]
        return total, terms
