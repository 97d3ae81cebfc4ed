"""Streaming mean IoU: counts that reproduce the `evaluate` "mean_iou" metric exactly, and Trainer hooks.

The standard metric (``evaluate.load("mean_iou")``) keeps every predicted and reference map until ``compute``
and then builds per-image ``np.histogram``s. Those histograms add up, and every rule they apply depends only on a
pixel's own (reference, prediction) values, so `PairCounts` (pixels per distinct value pair) holds everything
needed, whatever the number of images, and it can be summed across processes.

Semantics copied from the standard metric, corner cases included:

* ``label_map`` (applied entry after entry, as the standard metric does) and then ``reduce_labels``
  (0 -> 255, every other id - 1, 255 stays 255) change the references only;
* pixels whose (mapped) reference equals ``ignore_index`` are dropped;
* its histograms use ``bins=num_labels, range=(0, num_labels - 1)``, which counts exactly the integer ids in
  ``[0, num_labels)`` and silently drops anything else. So a prediction outside that range is in no prediction
  or intersection bin while its pixel still counts in its reference's area, and a reference outside that range
  (other than ``ignore_index``) is in no reference bin while its pixel's prediction still counts in the
  prediction area (`reference_only`, `prediction_only`).

Besides `ConfusionMatrix` this module offers the two hooks for transformers' ``Trainer`` with
``batch_eval_metrics=True``: `argmax_logits_for_metrics` (``preprocess_logits_for_metrics``) and
`streaming_metrics_for_trainer` (``compute_metrics``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .pair_counts import PairCounts, SegmentationMaps

__all__ = ["ConfusionMatrix", "argmax_logits_for_metrics", "streaming_metrics_for_trainer"]


class ConfusionMatrix:
    """Pixel confusion counts over ``num_labels`` classes, from which the standard mean IoU metrics follow.

    The maps' raw value pairs are counted (`PairCounts`); the settings below turn them into class counts when a
    result is read, so reading is exact for any ids the maps hold.

    Args:
        num_labels: number of classes ``K``.
        ignore_index: reference id whose pixels are dropped (``None``: none is dropped).
        reduce_labels: reference 0 becomes ``ignore``-like 255 and every other id is lowered by one, as in the
            standard metric (255 stays 255).
        device: where the maps are counted; ``None``: where the predictions are (CUDA maps are counted on their
            GPU). The counts themselves are small and live on the host.
        label_map: optional ``{old_id: new_id}`` applied to the references before ``reduce_labels``.

    Attributes:
        counts: the raw `PairCounts`.
        matrix: ``(K, K)`` int64 tensor, ``matrix[r, p]`` = pixels with reference ``r`` predicted ``p``.
        reference_only: ``(K,)`` int64, pixels with reference ``r`` whose prediction is outside ``[0, K)``.
        prediction_only: ``(K,)`` int64, pixels predicted ``p`` whose (kept) reference is outside ``[0, K)``.
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        device: str | torch.device | None = None,
        label_map: Mapping[int, int] | None = None,
    ) -> None:
        if int(num_labels) < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        self.num_labels = int(num_labels)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self.label_map = None if label_map is None else {int(k): int(v) for k, v in label_map.items()}
        self._device = None if device is None else torch.device(device)
        self.counts = PairCounts()
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        """Where maps are counted when they come as CPU data (``cpu`` unless a device was given)."""
        return self._device or torch.device("cpu")

    def settings(self) -> dict[str, Any]:
        """The options that decide what is counted; two matrices can only be merged when these agree."""
        return {
            "num_labels": self.num_labels,
            "ignore_index": self.ignore_index,
            "reduce_labels": self.reduce_labels,
            "label_map": self.label_map,
        }

    def _class_counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._cache is None:
            arrays = self.counts.class_counts(self.num_labels, self.ignore_index, self.reduce_labels, self.label_map)
            self._cache = tuple(torch.from_numpy(a) for a in arrays)
        return self._cache

    @property
    def matrix(self) -> torch.Tensor:
        return self._class_counts()[0]

    @property
    def reference_only(self) -> torch.Tensor:
        return self._class_counts()[1]

    @property
    def prediction_only(self) -> torch.Tensor:
        return self._class_counts()[2]

    def update(self, predictions: SegmentationMaps, references: SegmentationMaps) -> ConfusionMatrix:
        """Count the pixels of some maps; the maps themselves are not kept.

        Args:
            predictions: class ids, a tensor/array ``(H, W)`` or ``(B, H, W)``, or a list of ``(H_i, W_i)`` maps
                (tensors, arrays or nested lists) whose sizes may differ.
            references: the matching reference ids, in the same layout and shapes.

        Returns:
            ``self``.
        """
        self.counts.update(predictions, references, device=self._device)
        self._cache = None
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other)}")
        if other.settings() != self.settings():
            raise ValueError(f"cannot merge confusion matrices with settings {self.settings()} and {other.settings()}")

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of `other` (same settings) to this one, in place; returns ``self``."""
        self._check_compatible(other)
        self.counts.merge(other.counts)
        self._cache = None
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def all_reduce(self, group: Any | None = None) -> ConfusionMatrix:
        """Sum the counts over all processes with ``torch.distributed`` (no-op when it is not initialised).

        Every process of `group` must call it; each then holds the total.
        """
        self.counts.all_reduce(group)
        self._cache = None
        return self

    def reset(self) -> None:
        """Zero every count."""
        self.counts.reset()
        self._cache = None

    def areas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The standard metric's totals, each a float64 array of shape ``(K,)``.

        Returns:
            ``(area_intersect, area_union, area_pred_label, area_label)``.
        """
        matrix, reference_only, prediction_only = (t.numpy() for t in self._class_counts())
        area_intersect = np.diag(matrix).astype(np.float64)
        area_pred_label = (matrix.sum(axis=0) + prediction_only).astype(np.float64)
        area_label = (matrix.sum(axis=1) + reference_only).astype(np.float64)
        area_union = area_pred_label + area_label - area_intersect
        return area_intersect, area_union, area_pred_label, area_label

    def compute(self, nan_to_num: float | None = None) -> dict[str, Any]:
        """The standard metric's result over everything counted so far (the counts are kept).

        Args:
            nan_to_num: when given, every nan in the result is replaced by it (``np.nan_to_num``).

        Returns:
            ``mean_iou``, ``mean_accuracy``, ``overall_accuracy`` (``np.float64``, nan when undefined),
            ``per_category_iou`` and ``per_category_accuracy`` (float64 arrays of shape ``(K,)``, nan for a class
            with no pixel in either map, resp. none in the references).
        """
        area_intersect, area_union, _, area_label = self.areas()
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan, as the standard metric warns
            overall_accuracy = area_intersect.sum() / area_label.sum()
            iou = area_intersect / area_union
            accuracy = area_intersect / area_label
            metrics: dict[str, Any] = {
                "mean_iou": np.nanmean(iou),
                "mean_accuracy": np.nanmean(accuracy),
                "overall_accuracy": overall_accuracy,
                "per_category_iou": iou,
                "per_category_accuracy": accuracy,
            }
        if nan_to_num is not None:
            metrics = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in metrics.items()}
        return metrics

    def compute_detectron2(self) -> dict[str, Any]:
        """detectron2's `SemSegEvaluator` numbers (the original's published metric) from the same counts.

        Only pixels whose reference is a class count (ignored and out-of-range references are left out, also as
        false positives). A class's accuracy and IoU are defined only when it has reference pixels, and the means
        run over those classes: a class that is predicted but absent from the references does not lower the mean,
        unlike `compute`.

        Returns:
            ``mean_iou``, ``frequency_weighted_iou``, ``mean_accuracy``, ``pixel_accuracy`` (floats, nan when no
            pixel counted), ``per_category_iou`` and ``per_category_accuracy`` (``(K,)`` float64, nan where
            undefined) and ``classes_with_ground_truth``.
        """
        matrix = self.matrix.cpu().numpy().astype(np.float64)
        true_positive = np.diag(matrix)
        reference = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        union = reference + predicted - true_positive
        has_reference = reference > 0
        iou = np.full(self.num_labels, np.nan)
        accuracy = np.full(self.num_labels, np.nan)
        iou[has_reference] = true_positive[has_reference] / union[has_reference]
        accuracy[has_reference] = true_positive[has_reference] / reference[has_reference]
        total = reference.sum()
        counted = int(has_reference.sum())
        return {
            "mean_iou": float(iou[has_reference].mean()) if counted else float("nan"),
            "frequency_weighted_iou": float((iou[has_reference] * reference[has_reference]).sum() / total)
            if counted else float("nan"),
            "mean_accuracy": float(accuracy[has_reference].mean()) if counted else float("nan"),
            "pixel_accuracy": float(true_positive.sum() / total) if counted else float("nan"),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
            "classes_with_ground_truth": counted,
        }

    def state_dict(self) -> dict[str, Any]:
        """The raw counts (CPU int64 tensors) and settings, to resume an evaluation with `load_state_dict`."""
        return {**self.settings(), **self.counts.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the counts by those of `state` (from `state_dict`); its settings must match."""
        saved = {key: state.get(key) for key in self.settings()}
        if saved["label_map"] is not None:
            saved["label_map"] = {int(k): int(v) for k, v in saved["label_map"].items()}
        if saved != self.settings():
            raise ValueError(f"state settings {saved} do not match {self.settings()}")
        self.counts = PairCounts.from_state_dict(state)
        self._cache = None

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_labels={self.num_labels}, ignore_index={self.ignore_index}, "
            f"reduce_labels={self.reduce_labels}, pixels={int(self.matrix.sum() + self.reference_only.sum())})"
        )


def argmax_logits_for_metrics(
    logits: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor | None
) -> torch.Tensor:
    """``preprocess_logits_for_metrics`` for ``Trainer``: class-id maps instead of logits are gathered.

    Args:
        logits: ``(B, C, h, w)`` scores, or a tuple whose first element is that (the model's other outputs).
        labels: ``(B, H, W)`` reference maps (only their size is used); ``None`` keeps ``(h, w)``.

    Returns:
        ``(B, H, W)`` int64: the argmax over classes of the logits bilinearly resized (``align_corners=False``).
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if logits.ndim != 4:
        raise ValueError(f"expected logits of shape (B, C, h, w), got {tuple(logits.shape)}")
    size = tuple(logits.shape[-2:]) if labels is None else tuple(labels.shape[-2:])
    if size == tuple(logits.shape[-2:]):
        return logits.argmax(dim=1)
    if not logits.is_floating_point():
        logits = logits.float()
    # One image at a time: the resized logits, (C, H, W) each, are the largest tensor here.
    return torch.cat(
        [
            F.interpolate(logits[i : i + 1], size=size, mode="bilinear", align_corners=False).argmax(dim=1)
            for i in range(logits.shape[0])
        ]
    )


def streaming_metrics_for_trainer(
    num_labels: int,
    ignore_index: int | None = 255,
    id2label: Mapping[Any, str] | None = None,
) -> Callable[..., dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer(..., args=TrainingArguments(batch_eval_metrics=True))``.

    Each call counts one evaluation batch (``eval_pred.predictions``: ``(B, H, W)`` class ids, e.g. from
    `argmax_logits_for_metrics`; ``eval_pred.label_ids``: ``(B, H, W)``) into a `ConfusionMatrix`. The Trainer
    gathers every batch across processes before calling it, so no further reduction is done here. With
    ``compute_result=True`` it returns ``{"mean_iou", "mean_accuracy", "overall_accuracy"}`` (plus
    ``"iou_<name>"`` per class when `id2label` is given) as Python floats and starts over; other calls return
    ``{}``.
    """
    confusion = ConfusionMatrix(num_labels, ignore_index=ignore_index)
    names: list[str] | None = None
    if id2label is not None:
        names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(num_labels)]

    def compute_metrics(eval_pred: Any, compute_result: bool = False) -> dict[str, float]:
        predictions = eval_pred.predictions
        if isinstance(predictions, tuple):  # several model outputs: the first holds the class ids
            predictions = predictions[0]
        confusion.update(predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        result = confusion.compute()
        confusion.reset()
        metrics = {key: float(result[key]) for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        if names is not None:
            for name, value in zip(names, result["per_category_iou"]):
                metrics[f"iou_{name}"] = float(value)
        return metrics

    return compute_metrics
