"""Where `fgaseg evaluate`'s images come from: prepared benchmarks, users' folders, `datasets` sets; and reading
their files with one clear line for each bad one (see `fgaseg_hf.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Hub dataset ids for the model-index of a card.
DATASET_TYPES = {
    "ade150": "scene_parse_150", "ade847": "ade20k_full", "pc59": "pascal_context", "pc459": "pascal_context",
    "voc20": "pascal_voc", "voc20b": "pascal_voc", "coco": "coco_stuff",
}


class EvaluationError(ValueError):
    """A problem with the command's input, reported as one line."""


@dataclass
class EvaluationSource:
    """One split to score: a prepared benchmark, a user's folder, or a `datasets` dataset.

    Attributes:
        key: the report's key (a benchmark key, or ``folder:<name>`` / ``dataset:<name>``).
        spec: how label values become class ids (`BenchmarkSpec`).
        dataset: rows with ``image`` and ``annotation`` (`datasets.Image` columns) and optionally ``id``.
        prompt_names: the names prompted (``T`` of them).
        scored_names: the names of the ``spec.num_classes`` scored classes.
        dataset_type: the Hub dataset id of a model card entry.
    """

    key: str
    spec: Any
    dataset: Any
    prompt_names: list[str]
    scored_names: list[str]
    dataset_type: str


def benchmark_source(key: str, root: str | Path) -> EvaluationSource:
    """A prepared benchmark under `root` (one line naming the `fgaseg prepare` command when it is missing)."""
    from .data.benchmarks import class_names, get_spec, load_benchmark, scored_class_names

    spec = get_spec(key)
    dataset, _ = load_benchmark(key, root)
    return EvaluationSource(key, spec, dataset, class_names(key), scored_class_names(key), DATASET_TYPES.get(key, key))


def folder_source(path: str | Path, classes: str | None, split: str, ignore_index: int,
                  reduce_labels: bool) -> EvaluationSource:
    """A user's folder of images and label maps (`fgaseg_hf.data.benchmarks.load_folder_dataset`)."""
    from .data.benchmarks import folder_spec, load_folder_dataset

    dataset, names = load_folder_dataset(path, split=split, class_names_file=classes)
    name = Path(path).resolve().name
    spec = folder_spec(f"folder:{name}", len(names), ignore_index=ignore_index, reduce_labels=reduce_labels)
    return EvaluationSource(spec.key, spec, dataset, names, names, name)


def dataset_source(name: str, classes: str | None, split: str, image_column: str, label_column: str,
                   ignore_index: int, reduce_labels: bool) -> EvaluationSource:
    """Any `datasets.load_dataset`-loadable set with an image and a label-map column."""
    from .data.benchmarks import folder_spec, load_parquet_or_hub

    if classes is None:
        raise EvaluationError(f"--dataset {name}: pass --classes FILE (a JSON list or one name per line)")
    dataset, names = load_parquet_or_hub(name, image_column=image_column, label_column=label_column,
                                         class_names_file=classes, split=split)
    spec = folder_spec(f"dataset:{Path(name).name or name}", len(names), ignore_index, reduce_labels)
    return EvaluationSource(spec.key, spec, dataset, names, names, str(name))


def _undecoded(dataset):
    """The same rows with the image columns as ``{"path", "bytes"}``: decoding (and its errors) happens here."""
    import datasets

    for column in ("image", "annotation"):
        if isinstance(dataset.features.get(column), datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _open_image(value, kind: str, where: str) -> Image.Image:
    """Decode one image cell, with one line naming the file on failure."""
    import io

    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            image = Image.open(value["path"])
        else:
            raise ValueError("no file and no bytes")
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        path = value.get("path") if isinstance(value, dict) else None
        raise EvaluationError(f"{where}: cannot read the {kind} {path or ''}: {error}".replace("  ", " ")) from None
    return image


def _label_array(image: Image.Image, where: str) -> np.ndarray:
    if image.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        raise EvaluationError(f"{where}: the label map is a {image.mode} image; expected one class id per pixel")
    return np.asarray(image)


def _strict_check(label: np.ndarray, spec, where: str) -> None:
    from .data.benchmarks import to_class_ids

    class_ids = to_class_ids(label, spec)
    outside = (class_ids == spec.ignore_index) & (label != spec.ignore_index)
    if spec.disk_ignore_value is not None:
        outside &= label != spec.disk_ignore_value
    if outside.any():
        values = ", ".join(str(v) for v in np.unique(label[outside])[:10].tolist())
        raise EvaluationError(
            f"{where}: label ids outside the {spec.num_classes} classes ({values}) in {int(outside.sum())} pixels "
            "(--strict)"
        )
