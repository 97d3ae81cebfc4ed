"""Streaming mean IoU: the `evaluate` "mean_iou" metric with constant memory, as a drop-in.

Results are identical to ``evaluate.load("mean_iou")`` (same keys, value types, nan handling, ``label_map``,
``reduce_labels`` and out-of-range corner cases), but ``add_batch``/``add`` only count the pixels of each distinct
(reference value, prediction value) pair: no map is written to evaluate's arrow cache, whatever the number of
images. Since every setting applies to those raw pairs exactly, the settings may come at any point::

    metric = evaluate.load("path/to/streaming_mean_iou")
    for predictions, references in batches:          # (B, H, W) tensors/arrays or lists of (H, W) maps
        metric.add_batch(predictions=predictions, references=references)
    results = metric.compute(num_labels=150, ignore_index=255, reduce_labels=True)

``num_labels``, ``ignore_index``, ``reduce_labels``, ``label_map`` and ``nan_to_num`` given to ``evaluate.load``
are defaults; given to an ``add_batch``/``add`` they are the defaults of the current round (repeated ones must
agree); given to ``compute`` they win. ``ignore_index`` defaults to 255 when given nowhere. After ``compute`` the
counts are cleared. With ``num_process > 1``, every process calls ``compute``; the counts are summed with
``torch.distributed`` (which must be initialised) and process 0 gets the result, the others ``None``.
"""

from typing import Any

import datasets
import evaluate
import torch

from fgaseg_hf.metrics.mean_iou import ConfusionMatrix
from fgaseg_hf.metrics.pair_counts import PairCounts

_DESCRIPTION = """
IoU is the area of overlap between the predicted segmentation and the reference divided by the area of their
union. The mean IoU averages the per-class IoU over the classes (nan classes excluded). This streaming version
accumulates a confusion matrix, so memory does not grow with the number of images.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`, `ndarray` or `torch.Tensor`):
        Predicted class-id maps: a list of (height, width) maps (sizes may differ) or a (batch, height, width) stack.
    references (same as `predictions`):
        Reference class-id maps, each of the same shape as its prediction.
    num_labels (`int`):
        Number of classes.
    ignore_index (`int`):
        Reference id that is ignored (after `label_map` and `reduce_labels`).
    nan_to_num (`int`, *optional*):
        If given, nan values in the result are replaced by it (`compute` only).
    label_map (`dict`, *optional*):
        Old reference id -> new id; every lookup uses the original ids.
    reduce_labels (`bool`, *optional*, defaults to `False`):
        Reference 0 becomes 255 and every other id is lowered by one (255 stays 255).

Returns:
    mean_iou (`float`), mean_accuracy (`float`), overall_accuracy (`float`),
    per_category_iou (`ndarray` of shape `(num_labels,)`), per_category_accuracy (`ndarray` of shape `(num_labels,)`).

Examples:

    >>> metric = evaluate.load("src/fgaseg_hf/metrics/streaming_mean_iou", num_labels=10, ignore_index=255)
    >>> metric.add_batch(predictions=[[[1, 2], [3, 4]]], references=[[[1, 2], [3, 3]]])
    >>> sorted(metric.compute())
    ['mean_accuracy', 'mean_iou', 'overall_accuracy', 'per_category_accuracy', 'per_category_iou']
"""

_CITATION = """\
@software{MMSegmentation_Contributors_OpenMMLab_Semantic_Segmentation_2020,
author = {{MMSegmentation Contributors}},
license = {Apache-2.0},
month = {7},
title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
url = {https://github.com/open-mmlab/mmsegmentation},
year = {2020}
}"""

_SETTINGS = ("num_labels", "ignore_index", "reduce_labels", "label_map")
_UNSET = object()


def _normalise(name: str, value: Any) -> Any:
    """A setting in the form `ConfusionMatrix.settings()` reports it."""
    if value is None:
        return None
    if name == "label_map":
        return {int(k): int(v) for k, v in value.items()}
    if name == "reduce_labels":
        return bool(value)
    if name == "nan_to_num":
        return float(value)
    return int(value)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StreamingMeanIoU(evaluate.Metric):
    """Mean IoU whose ``add_batch``/``add`` only update a confusion matrix (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        num_labels: int | None = None,
        ignore_index: Any = _UNSET,
        reduce_labels: Any = _UNSET,
        label_map: Any = _UNSET,
        nan_to_num: Any = _UNSET,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        given = {"num_labels": num_labels, "ignore_index": ignore_index, "reduce_labels": reduce_labels,
                 "label_map": label_map, "nan_to_num": nan_to_num}
        # Only what was given: unset options fall back to later calls, then to the standard metric's defaults.
        self._default_settings = {
            name: value for name, value in given.items()
            if value is not _UNSET and not (name == "num_labels" and value is None)
        }
        self._device = device
        self._counts: PairCounts | None = None
        self._round_settings: dict[str, Any] = {}

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
            reference_urls=[
                "https://github.com/huggingface/evaluate/tree/main/metrics/mean_iou",
                "https://github.com/open-mmlab/mmsegmentation/blob/71c201b/mmseg/core/evaluation/metrics.py",
            ],
        )

    @property
    def counts(self) -> PairCounts | None:
        """The raw pair counts accumulated since the last `compute` (``None`` before the first map)."""
        return self._counts

    def _remember(self, settings: dict[str, Any]) -> None:
        """Settings given with an add: defaults for this round's `compute`; repeated ones must agree."""
        for name, value in settings.items():
            earlier = self._round_settings.get(name, value)
            if _normalise(name, value) != _normalise(name, earlier):
                raise ValueError(
                    f"{name}={value!r} differs from {self._round_settings[name]!r}, given with an earlier add of this "
                    "round; give it once, or to compute"
                )
            self._round_settings[name] = value

    def _confusion(self, settings: dict[str, Any]) -> ConfusionMatrix:
        resolved = {**self._default_settings, **self._round_settings, **settings}
        if resolved.get("num_labels") is None:
            raise ValueError(
                "streaming_mean_iou needs num_labels: pass it to compute(..., num_labels=...), to evaluate.load or "
                "to an add_batch/add call"
            )
        confusion = ConfusionMatrix(
            resolved["num_labels"],
            ignore_index=resolved.get("ignore_index", 255),
            reduce_labels=resolved.get("reduce_labels") or False,
            label_map=resolved.get("label_map"),
        )
        confusion.counts = self._counts if self._counts is not None else PairCounts()
        return confusion

    @staticmethod
    def _split_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
        """Take the counting settings out of `kwargs`; anything else left is an error."""
        settings = {name: kwargs.pop(name) for name in (*_SETTINGS, "nan_to_num") if name in kwargs}
        if kwargs:
            raise ValueError(
                f"unexpected arguments {sorted(kwargs)}; expected some of {[*_SETTINGS, 'nan_to_num']}"
            )
        return settings

    def add_batch(self, *, predictions=None, references=None, **kwargs) -> None:
        """Count a batch of predicted and reference maps into the confusion matrix; the maps are not kept.

        Args:
            predictions: class ids, a ``(B, H, W)`` tensor/array or a list of ``(H, W)`` maps.
            references: the matching reference ids, same layout.
            **kwargs: ``num_labels``, ``ignore_index``, ``reduce_labels``, ``label_map``, ``nan_to_num``: defaults
                for this round's `compute` (see the module docstring).
        """
        settings = self._split_settings(dict(kwargs))
        if predictions is None or references is None:
            raise ValueError("add_batch needs both predictions and references")
        counts = self._counts if self._counts is not None else PairCounts()
        counts.update(predictions, references, device=self._device)
        self._remember(settings)
        self._counts = counts

    def add(self, *, prediction=None, reference=None, **kwargs) -> None:
        """Count one predicted map and its reference, each ``(H, W)``, into the confusion matrix.

        Args:
            prediction: ``(H, W)`` class ids.
            reference: ``(H, W)`` reference ids.
            **kwargs: ``num_labels``, ``ignore_index``, ``reduce_labels``, ``label_map``, ``nan_to_num``.
        """
        if prediction is None or reference is None:
            raise ValueError("add needs both prediction and reference")
        self.add_batch(predictions=[prediction], references=[reference], **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict | None:
        """The mean IoU of every map added since the last `compute` (plus `predictions`/`references` if given).

        Args:
            predictions, references: optional last maps, as for `add_batch`.
            **kwargs: ``num_labels``, ``ignore_index``, ``reduce_labels``, ``label_map``, ``nan_to_num``; they
                override those given to ``evaluate.load`` or with an add.

        Returns:
            The standard mean_iou result dict (``None`` on processes other than 0 when ``num_process > 1``).
            The counts are cleared afterwards.
        """
        settings = self._split_settings(dict(kwargs))
        if (predictions is None) != (references is None):
            raise ValueError("compute needs both predictions and references, or neither")
        if predictions is not None:
            self.add_batch(predictions=predictions, references=references)
        elif self._counts is None:
            raise ValueError("nothing to compute: no map was added since the last compute")
        confusion = self._confusion(settings)
        nan_to_num = {**self._default_settings, **self._round_settings, **settings}.get("nan_to_num")
        self._counts, self._round_settings = None, {}
        if self.num_process > 1:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise RuntimeError("num_process > 1 needs an initialised torch.distributed process group")
            confusion.all_reduce()
            if self.process_id != 0:
                return None
        return confusion.compute(nan_to_num=nan_to_num)

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int,
        nan_to_num: int | None = None,
        label_map: dict[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> dict:
        """The standard metric's computation over complete lists of maps (not used by the streaming path)."""
        confusion = ConfusionMatrix(num_labels, ignore_index=ignore_index, reduce_labels=reduce_labels,
                                    device=self._device, label_map=label_map)
        return confusion.update(predictions, references).compute(nan_to_num=nan_to_num)
