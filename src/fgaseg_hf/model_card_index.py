"""The metadata half of a model card: the YAML front matter and its `model-index`, built and validated.

`build_metadata` writes the front matter `fgaseg_hf.model_card` puts above a card's body; `validate_results` checks
the results mapping it records (see `fgaseg_hf.model_card` for its format) and `validate_model_index` checks a
`model-index` block against the Hub's schema, on cards this package writes as well as on cards read back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

REQUIRED_METADATA_KEYS = ("license", "library_name", "pipeline_tag", "tags")
CARD_TAGS = ["fgaseg", "open-vocabulary", "semantic-segmentation", "clip"]
TASK = {"type": "image-segmentation", "name": "Semantic Segmentation"}
METRIC_TYPE = "mean_iou"
METRIC_NAME = "mIoU"


# ----------------------------------------------------------------------------------------------- validation
# Malformed results or metadata raise ValueError (as huggingface_hub does), wrong types included: hence TRY004 noqa.
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_results(results: Mapping[str, Any]) -> None:
    """Check a results mapping (see the module docstring); raise ValueError naming the first problem."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping benchmark key -> entry")
    for key, entry in results.items():
        where = f"results[{key!r}]"
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: benchmark keys must be non-empty strings")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping, got {type(entry).__name__}")  # noqa: TRY004
        for field in ("dataset_name", "dataset_type", "split"):
            if not isinstance(entry.get(field), str) or not entry[field].strip():
                raise ValueError(f"{where} needs a non-empty string {field!r}")
        miou = entry.get("mIoU")
        if not _is_number(miou) or not 0.0 <= miou <= 1.0:
            raise ValueError(f"{where}['mIoU'] must be a fraction in [0, 1] (not a percentage), got {miou!r}")
        per_class = entry.get("per_class_iou")
        if per_class is not None:
            if not isinstance(per_class, Mapping) or not per_class:
                raise ValueError(f"{where}['per_class_iou'] must be a non-empty mapping class name -> IoU")
            for name, value in per_class.items():
                if value is not None and (not _is_number(value) or not 0.0 <= value <= 1.0):
                    raise ValueError(f"{where}['per_class_iou'][{name!r}] must be a fraction in [0, 1] or null")
        unknown = set(entry) - {"dataset_name", "dataset_type", "split", "mIoU", "per_class_iou"}
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)}")


def validate_model_index(metadata: Mapping[str, Any]) -> None:
    """Check the `model-index` block of card metadata against the Hub's schema; raise ValueError if malformed.

    Metadata without a `model-index` is valid. Each result needs a task (with a type), a dataset (name and type)
    and at least one metric with a type and a finite numeric value.
    """
    if "model-index" not in metadata:
        return
    index = metadata["model-index"]
    if not isinstance(index, list) or not index:
        raise ValueError("model-index must be a non-empty list")
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, Mapping):
            raise ValueError(f"{where} must be a mapping")  # noqa: TRY004
        if not isinstance(model.get("name"), str) or not model["name"]:
            raise ValueError(f"{where} needs a non-empty 'name'")
        results = model.get("results")
        if not isinstance(results, list) or not results:
            raise ValueError(f"{where}.results must be a non-empty list")
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(result, Mapping):
                raise ValueError(f"{at} must be a mapping")  # noqa: TRY004
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, Mapping) or not isinstance(task.get("type"), str):
                raise ValueError(f"{at}.task needs a string 'type'")  # noqa: TRY004
            if not isinstance(dataset, Mapping) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
                raise ValueError(f"{at}.dataset needs string 'name' and 'type'")
            if "split" in dataset and not isinstance(dataset["split"], str):
                raise ValueError(f"{at}.dataset.split must be a string")
            if not isinstance(metrics, list) or not metrics:
                raise ValueError(f"{at}.metrics must be a non-empty list")
            for k, metric in enumerate(metrics):
                if not isinstance(metric, Mapping) or not isinstance(metric.get("type"), str):
                    raise ValueError(f"{at}.metrics[{k}] needs a string 'type'")  # noqa: TRY004
                if not _is_number(metric.get("value")):
                    raise ValueError(f"{at}.metrics[{k}].value must be a finite number, got {metric.get('value')!r}")


def build_metadata(
    results: Mapping[str, Any] | None,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    tags: Sequence[str] = tuple(CARD_TAGS),
) -> dict[str, Any]:
    """The card's front matter as a dict (key order is the order written); `tags` default to FGA-Seg's."""
    metadata: dict[str, Any] = {
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": list(tags),
    }
    if datasets:
        metadata["datasets"] = list(datasets)
    if base_model:
        metadata["base_model"] = base_model
    if results:
        validate_results(results)
        metadata["model-index"] = [{
            "name": model_name,
            "results": [
                {
                    "task": dict(TASK),
                    "dataset": {"name": e["dataset_name"], "type": e["dataset_type"], "split": e["split"]},
                    "metrics": [{"type": METRIC_TYPE, "value": e["mIoU"], "name": METRIC_NAME}],
                }
                for e in results.values()
            ],
        }]
        validate_model_index(metadata)
    return metadata
