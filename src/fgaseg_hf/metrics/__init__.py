"""Segmentation metrics: a streaming, exact replacement of `evaluate`'s "mean_iou" and Trainer hooks.

* `ConfusionMatrix`: constant-memory mean IoU, identical to ``evaluate.load("mean_iou")``.
* `PairCounts`: the raw (reference value, prediction value) pixel counts underneath, from which any setting of that
  metric follows exactly.
* `argmax_logits_for_metrics` / `streaming_metrics_for_trainer`: ``preprocess_logits_for_metrics`` and
  ``compute_metrics`` for ``Trainer`` with ``batch_eval_metrics=True``.
* `load_streaming_mean_iou`: the same metric as an `evaluate` module, loaded offline from this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .mean_iou import ConfusionMatrix, argmax_logits_for_metrics, streaming_metrics_for_trainer
from .pair_counts import PairCounts

STREAMING_MEAN_IOU_PATH = Path(__file__).resolve().parent / "streaming_mean_iou"
"""Folder of the `evaluate` module, usable as ``evaluate.load(str(STREAMING_MEAN_IOU_PATH), ...)``."""


def load_streaming_mean_iou(**kwargs: Any):
    """``evaluate.load`` of the shipped streaming mean IoU module (no network needed).

    Args:
        **kwargs: passed to ``evaluate.load``: its own options (``cache_dir``, ``experiment_id``,
            ``num_process``, ``process_id``, ...) and the metric's defaults ``num_labels``, ``ignore_index``,
            ``reduce_labels``, ``label_map``, ``nan_to_num`` (each may also come with an add or to ``compute``) and
            ``device`` (where maps are counted).

    Returns:
        The `evaluate.EvaluationModule` (a ``StreamingMeanIoU``).
    """
    import evaluate

    return evaluate.load(str(STREAMING_MEAN_IOU_PATH), **kwargs)


__all__ = [
    "STREAMING_MEAN_IOU_PATH",
    "ConfusionMatrix",
    "PairCounts",
    "argmax_logits_for_metrics",
    "load_streaming_mean_iou",
    "streaming_metrics_for_trainer",
]
