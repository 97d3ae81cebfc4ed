"""Evaluation benchmarks of the original FGA-Seg as `datasets.Dataset` objects.

The original (and CAT-Seg, whose data code it reuses) evaluates on ADE20K-150, ADE20K-847, PASCAL-Context-59,
PASCAL-Context-459, PASCAL VOC-20 and VOC-20b (plus COCO-Stuff-171, its training set), each read from the folder
layout its ``datasets/prepare_*.py`` scripts write under ``$DETECTRON2_DATASETS``. This module describes those
layouts (`BENCHMARKS`), loads them (`load_benchmark`), loads the raw ``ADEChallengeData2016`` folder
(`load_ade20k_raw`) and any `datasets`-loadable segmentation set (`load_parquet_or_hub`).

Every loader returns ``(dataset, class_names)``; the dataset has an ``id`` string column (the file stem) and
``image`` / ``annotation`` columns of type `datasets.Image`, stored as file paths and decoded only when a row is
read. Annotations hold the values stored on disk (uint8 PNG, or uint16 TIFF for ADE-847 and PC-459); turn a
decoded annotation into class ids with `to_class_ids`, which applies the benchmark's mapping and ignore rule.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

PathLike = str | os.PathLike

# The original evaluates on the validation splits (registered as "test"), so "test" means validation here.
SPLIT_ALIASES = {
    "val": "validation", "validation": "validation", "test": "validation", "train": "train", "training": "train",
}


@dataclass(frozen=True)
class EvalProtocol:
    """Test-time settings shared by every benchmark in the original's ``eval.sh`` and model configs."""

    prompt_templates: tuple[str, ...] = ("A photo of a {} in the scene",)
    # Names such as "building, edifice" are prompted with their first synonym only.
    prompt_name_separator: str = ", "
    sliding_window: bool = True
    pooling_sizes: tuple[int, int] = (1, 1)
    min_size_test: int = 640
    max_size_test: int = 2560
    # The resized image is squashed to this square (aspect ratio not kept) before the window pass.
    window_canvas: int = 640
    window_crop: int = 384
    window_stride: int = 256
    window_global_view: bool = True
    clip_resolution: dict[str, int] = field(default_factory=lambda: {"ViT-B/16": 384, "ViT-L/14@336px": 336})
    # detectron2's SemSegEvaluator: mIoU over classes with ground-truth pixels only.
    miou_definition: str = "detectron2"
    checkpoint: str = "model_final.pth"


@dataclass(frozen=True)
class BenchmarkSpec:
    """One prepared benchmark: where its files are and how its label values become class ids.

    Attributes:
        key: short name (``"ade150"``, ...), also the name of its class file ``benchmark_classes/<key>.json``.
        display_name: human-readable name.
        registered_name: the original's detectron2 ``DATASETS.TEST`` name.
        image_dirs / label_dirs: per split (``"validation"``, sometimes ``"train"``), folders relative to root.
        image_suffix / label_suffix: file suffixes; images and labels are paired by file stem.
        label_format: ``"png-uint8"`` or ``"tiff-uint16"``.
        label_mapping: ``"identity"`` (values are already class ids) or ``"reduce_labels"`` (0 is void, ``k``
            is class ``k - 1``).
        num_classes: number of scored classes (21 for VOC-20b, whose class file holds 59 prompts).
        num_prompts: number of class names prompted (length of the class file).
        ignore_index: the original's ``ignore_label``; `to_class_ids` writes it for every non-class pixel.
        disk_ignore_value: the value the prepared labels use for void pixels (None when none exists).
        background_fold_index: for VOC-20b, predictions ``>=`` this index are folded into it before scoring.
        images_must_have_labels: whether every image in the image folder has a label (False for the VOC and
            PASCAL-Context folders, which hold the whole VOC release).
        protocol: evaluation settings of the original.
    """

    key: str
    display_name: str
    registered_name: str
    image_dirs: dict[str, str]
    label_dirs: dict[str, str]
    image_suffix: str
    label_suffix: str
    label_format: str
    label_mapping: str
    num_classes: int
    num_prompts: int
    ignore_index: int
    disk_ignore_value: int | None
    background_fold_index: int | None = None
    images_must_have_labels: bool = False
    protocol: EvalProtocol = field(default_factory=EvalProtocol)

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits for which a prepared layout exists."""
        return tuple(self.label_dirs)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.key: spec
    for spec in [
        BenchmarkSpec(
            key="ade150", display_name="ADE20K-150", registered_name="ade20k_150_test_sem_seg",
            image_dirs={"validation": "ADEChallengeData2016/images/validation"},
            label_dirs={"validation": "ADEChallengeData2016/annotations_detectron2/validation"},
            image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="identity",
            num_classes=150, num_prompts=150, ignore_index=255, disk_ignore_value=255,
            images_must_have_labels=True,
            # FGA-Seg's eval.sh (not CAT-Seg's) evaluates ADE-150 with an intermediate checkpoint.
            protocol=EvalProtocol(checkpoint="model_0074999.pth"),
        ),
        BenchmarkSpec(
            key="ade847", display_name="ADE20K-847", registered_name="ade20k_full_sem_seg_freq_val_all",
            image_dirs={"validation": "ADE20K_2021_17_01/images_detectron2/validation"},
            label_dirs={"validation": "ADE20K_2021_17_01/annotations_detectron2/validation"},
            image_suffix=".jpg", label_suffix=".tif", label_format="tiff-uint16", label_mapping="identity",
            num_classes=847, num_prompts=847, ignore_index=65535, disk_ignore_value=65535,
            images_must_have_labels=True,
        ),
        BenchmarkSpec(
            key="pc59", display_name="PASCAL-Context-59", registered_name="context_59_test_sem_seg",
            image_dirs={"validation": "VOCdevkit/VOC2010/JPEGImages"},
            label_dirs={"validation": "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"},
            image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="identity",
            num_classes=59, num_prompts=59, ignore_index=255, disk_ignore_value=255,
        ),
        BenchmarkSpec(
            key="pc459", display_name="PASCAL-Context-459", registered_name="context_459_test_sem_seg",
            image_dirs={"validation": "VOCdevkit/VOC2010/JPEGImages"},
            label_dirs={"validation": "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"},
            image_suffix=".jpg", label_suffix=".tif", label_format="tiff-uint16", label_mapping="identity",
            # The original's ignore label 459 never occurs on disk: every pixel is scored.
            num_classes=459, num_prompts=459, ignore_index=459, disk_ignore_value=None,
        ),
        BenchmarkSpec(
            key="voc20", display_name="PASCAL VOC-20", registered_name="voc_2012_test_sem_seg",
            image_dirs={"validation": "VOCdevkit/VOC2012/JPEGImages"},
            label_dirs={"validation": "VOCdevkit/VOC2012/annotations_detectron2/val"},
            image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="identity",
            num_classes=20, num_prompts=20, ignore_index=255, disk_ignore_value=255,
        ),
        BenchmarkSpec(
            key="voc20b", display_name="PASCAL VOC-20b", registered_name="voc_2012_test_background_sem_seg",
            image_dirs={"validation": "VOCdevkit/VOC2012/JPEGImages"},
            label_dirs={"validation": "VOCdevkit/VOC2012/annotations_detectron2_bg/val"},
            image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="identity",
            num_classes=21, num_prompts=59, ignore_index=255, disk_ignore_value=255, background_fold_index=20,
        ),
        BenchmarkSpec(
            key="coco", display_name="COCO-Stuff-171", registered_name="coco_2017_test_stuff_all_sem_seg",
            image_dirs={"validation": "coco-stuff/images/val2017", "train": "coco-stuff/images/train2017"},
            label_dirs={
                "validation": "coco-stuff/annotations_detectron2/val2017",
                "train": "coco-stuff/annotations_detectron2/train2017",
            },
            image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="identity",
            num_classes=171, num_prompts=171, ignore_index=255, disk_ignore_value=255,
            images_must_have_labels=True,
        ),
    ]
}

# The six benchmarks of the paper's tables, in their usual order.
EVAL_BENCHMARKS: tuple[str, ...] = ("ade847", "pc459", "ade150", "pc59", "voc20", "voc20b")

# Raw MIT Scene Parsing layout (also what HF ``scene_parse_150`` ships): 0 = other/void, k = class k - 1.
ADE20K_RAW_SPEC = BenchmarkSpec(
    key="ade150", display_name="ADE20K-150 (raw ADEChallengeData2016)", registered_name="ade20k_150_test_sem_seg",
    image_dirs={"validation": "images/validation", "train": "images/training"},
    label_dirs={"validation": "annotations/validation", "train": "annotations/training"},
    image_suffix=".jpg", label_suffix=".png", label_format="png-uint8", label_mapping="reduce_labels",
    num_classes=150, num_prompts=150, ignore_index=255, disk_ignore_value=0, images_must_have_labels=True,
)


def get_spec(key: str) -> BenchmarkSpec:
    """Returns the spec of benchmark ``key``, with a ValueError listing the known keys otherwise."""
    try:
        return BENCHMARKS[key]
    except KeyError:
        raise ValueError(f"unknown benchmark {key!r}; known: {', '.join(BENCHMARKS)}") from None


def class_names(key: str) -> list[str]:
    """The class names of benchmark ``key`` (list index == label value), exactly as in the original's JSON.

    For ``"voc20b"`` these are the 59 prompted names; see `scored_class_names` for its 21 scored classes.
    """
    get_spec(key)
    text = resources.files("fgaseg_hf.data").joinpath("benchmark_classes", f"{key}.json").read_text(encoding="utf-8")
    return list(json.loads(text))


def scored_class_names(key: str) -> list[str]:
    """Names of the classes that are scored: `class_names`, except VOC-20b's 20 VOC names + ``"background"``."""
    spec = get_spec(key)
    names = class_names(key)
    if spec.background_fold_index is None:
        return names
    return names[: spec.background_fold_index] + ["background"]


def prompt_class_names(key: str) -> list[str]:
    """Class names as the original prompts them: only the text before the first ``", "`` of each name."""
    separator = get_spec(key).protocol.prompt_name_separator
    return [name.split(separator, 1)[0] for name in class_names(key)]


# Families whose published results prompt their own synonym lists (benchmark_classes/<family>/<key>.json).
PUBLISHED_CLASS_LIST_FAMILIES = ("fcclip",)


def published_class_synonyms(key: str, family: str = "fcclip") -> list[list[str]]:
    """The synonym lists `family` published its results with on benchmark ``key``, one list per prompted class in
    this package's label order (see ``benchmark_classes/fcclip/README.md``). For ``"voc20b"`` these are 21 classes,
    background last: FC-CLIP prompts background as one class rather than 39 PASCAL-Context names."""
    get_spec(key)
    if family not in PUBLISHED_CLASS_LIST_FAMILIES:
        raise ValueError(f"no published class lists of {family!r}; known: {', '.join(PUBLISHED_CLASS_LIST_FAMILIES)}")
    place = resources.files("fgaseg_hf.data").joinpath("benchmark_classes", family, f"{key}.json")
    return [list(synonyms) for synonyms in json.loads(place.read_text(encoding="utf-8"))]


def to_class_ids(label: Any, spec: BenchmarkSpec | str, ignore_index: int | None = None) -> np.ndarray:
    """Converts a decoded annotation (PIL image or array) into an int64 class-id map.

    Values that are not a class id after the benchmark's mapping (void, the disk ignore value, and for
    PC-459 anything ``>= 459``) become ``ignore_index`` (default: the spec's).
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    ignore = spec.ignore_index if ignore_index is None else ignore_index
    values = np.asarray(label).astype(np.int64)
    if values.ndim == 3:
        raise ValueError(f"annotation has shape {values.shape}; expected a single-channel label map")
    if spec.label_mapping == "reduce_labels":
        # Signed arithmetic, so void (0) gives -1 and is caught by the range check below.
        values = values - 1
    elif spec.label_mapping != "identity":
        raise ValueError(f"unknown label mapping {spec.label_mapping!r}")
    return np.where((values >= 0) & (values < spec.num_classes), values, ignore)


def fold_predictions(prediction, spec: BenchmarkSpec | str) -> np.ndarray:
    """Folds VOC-20b's context-class predictions (index ``>= 20``) into background (20); others unchanged."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if spec.background_fold_index is None:
        return prediction
    if hasattr(prediction, "clamp"):  # a torch tensor stays one, on its device
        return prediction.clamp(max=spec.background_fold_index)
    return np.minimum(prediction, spec.background_fold_index)


def _normalise_split(split: str, spec: BenchmarkSpec) -> str:
    canonical = SPLIT_ALIASES.get(split, split)
    if canonical not in spec.label_dirs:
        raise ValueError(f"{spec.display_name} has no prepared split {split!r}; available: {', '.join(spec.splits)}")
    return canonical


def _paired_dataset(image_dir: Path, label_dir: Path, spec: BenchmarkSpec) -> datasets.Dataset:
    """Pairs label files with the image of the same stem (driven by the label folder) into a lazy Dataset."""
    import datasets

    for kind, folder in (("image", image_dir), ("label", label_dir)):
        if not folder.is_dir():
            raise ValueError(f"{spec.display_name}: {kind} folder {folder} does not exist")
    labels = {p.stem: p for p in label_dir.iterdir() if p.is_file() and p.suffix.lower() == spec.label_suffix}
    images = {p.stem: p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() == spec.image_suffix}
    if not labels:
        raise ValueError(f"{spec.display_name}: no *{spec.label_suffix} label files in {label_dir}")
    missing_images = sorted(set(labels) - set(images))
    if missing_images:
        raise ValueError(
            f"{spec.display_name}: {len(missing_images)} label(s) in {label_dir} have no *{spec.image_suffix} image "
            f"in {image_dir}, e.g. {missing_images[0]!r}"
        )
    if spec.images_must_have_labels:
        missing_labels = sorted(set(images) - set(labels))
        if missing_labels:
            raise ValueError(
                f"{spec.display_name}: {len(missing_labels)} image(s) in {image_dir} have no *{spec.label_suffix} "
                f"label file in {label_dir}, e.g. {missing_labels[0]!r}"
            )
    stems = sorted(labels)
    features = datasets.Features(
        {"id": datasets.Value("string"), "image": datasets.Image(), "annotation": datasets.Image()}
    )
    # Paths only: Image() keeps {"path": ..., "bytes": None} and decodes when a row is read.
    return datasets.Dataset.from_dict(
        {
            "id": stems,
            "image": [str(images[s]) for s in stems],
            "annotation": [str(labels[s]) for s in stems],
        },
        features=features,
    )


def load_benchmark(key: str, root: PathLike, split: str = "validation") -> tuple[datasets.Dataset, list[str]]:
    """Loads a benchmark from the folder layout the original's preparation scripts write under ``root``.

    Args:
        key: a key of `BENCHMARKS` (``"ade150"``, ``"ade847"``, ``"pc59"``, ``"pc459"``, ``"voc20"``,
            ``"voc20b"``, ``"coco"``).
        root: the ``$DETECTRON2_DATASETS`` folder.
        split: ``"validation"`` (alias ``"val"``); COCO-Stuff also has ``"train"``.

    Returns:
        The dataset (``id``, ``image``, ``annotation``; annotations hold the prepared values, already class ids
        with the spec's ignore value) and the class names (59 prompt names for VOC-20b).

    Raises:
        ValueError: unknown key or split, a missing folder, or a file without its partner.
    """
    spec = get_spec(key)
    split = _normalise_split(split, spec)
    root = Path(root)
    for kind, folder in (("image", spec.image_dirs[split]), ("label", spec.label_dirs[split])):
        if not (root / folder).is_dir():
            raise ValueError(
                f"{spec.display_name} is not prepared under {root}: no {kind} folder {root / folder}; make it with "
                f"`fgaseg prepare {key} --root {root} --archive <its download>`"
            )
    dataset = _paired_dataset(root / spec.image_dirs[split], root / spec.label_dirs[split], spec)
    return dataset, class_names(key)


def load_ade20k_raw(root: PathLike, split: str = "validation") -> tuple[datasets.Dataset, list[str]]:
    """Loads the raw ``ADEChallengeData2016`` folder (``root`` is that folder or its parent).

    Annotations are returned as stored (0 = other/void, 1..150 = classes): they are not reduced here so that
    they stay lazily decoded `datasets.Image` values. Reduce them with ``to_class_ids(label, ADE20K_RAW_SPEC)``
    (0 -> 255, k -> k - 1) or with the image processor's ``do_reduce_labels=True``.

    Args:
        root: the ``ADEChallengeData2016`` folder, or the folder containing it.
        split: ``"validation"`` or ``"train"`` (aliases ``"val"``, ``"training"``).
    """
    root = Path(root)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    spec = ADE20K_RAW_SPEC
    split = _normalise_split(split, spec)
    dataset = _paired_dataset(root / spec.image_dirs[split], root / spec.label_dirs[split], spec)
    return dataset, class_names("ade150")


def _read_class_names(class_names_file: PathLike | list[str] | None) -> list[str]:
    if class_names_file is None:
        return []
    if isinstance(class_names_file, list):
        return list(class_names_file)
    if isinstance(class_names_file, str) and class_names_file in BENCHMARKS:
        return class_names(class_names_file)
    path = Path(class_names_file)
    if not path.is_file():
        raise ValueError(f"class-name file {path} does not exist (nor is it a benchmark key)")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"class-name file {path} is not valid JSON: {error}") from None
        if isinstance(names, dict):  # an id2label mapping
            try:
                names = [names[k] for k in sorted(names, key=int)]
            except ValueError:
                raise ValueError(f"class-name file {path}: an id -> name mapping needs integer ids") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class-name file {path} must hold a JSON list of strings (or one name per line)")
    if not names:
        raise ValueError(f"class-name file {path} holds no class name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class-name file {path} names {duplicates[0]!r} twice")
    return names


def load_parquet_or_hub(
    name_or_path: PathLike,
    image_column: str = "image",
    label_column: str = "annotation",
    class_names_file: PathLike | list[str] | None = None,
    split: str = "validation",
    cache_dir: PathLike | None = None,
    **load_kwargs: Any,
) -> tuple[datasets.Dataset, list[str]]:
    """Loads any `datasets.load_dataset`-loadable segmentation set (a local parquet folder, a Hub repo, ...).

    Args:
        name_or_path: a Hub id or a local folder/file accepted by `datasets.load_dataset`.
        image_column / label_column: source columns, renamed to ``image`` / ``annotation`` and cast to
            `datasets.Image` (no decoding happens here).
        class_names_file: a JSON list file, a benchmark key, a list of names, or None (returns ``[]``).
        split: the split to load.
        cache_dir: `datasets` cache folder.
        **load_kwargs: passed to `datasets.load_dataset` (e.g. ``name=`` for a config).

    Labels keep their stored values; map them with `to_class_ids` when they follow a known benchmark's encoding.
    """
    import datasets

    names = _read_class_names(class_names_file)
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".parquet":
        dataset = datasets.load_dataset(
            "parquet", data_files={split: str(path)}, split=split, cache_dir=cache_dir, **load_kwargs
        )
    else:
        dataset = datasets.load_dataset(str(name_or_path), split=split, cache_dir=cache_dir, **load_kwargs)
    for source in (image_column, label_column):
        if source not in dataset.column_names:
            raise ValueError(f"{name_or_path}: no column {source!r}; columns are {dataset.column_names}")
    renames = {src: dst for src, dst in ((image_column, "image"), (label_column, "annotation")) if src != dst}
    clashing = [dst for dst in renames.values() if dst in dataset.column_names and dst not in renames]
    if clashing:
        dataset = dataset.remove_columns(clashing)
    if renames:
        dataset = dataset.rename_columns(renames)
    for column in ("image", "annotation"):
        if not isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image())
    return dataset, names


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
IMAGE_FOLDER_NAMES = ("images", "image", "imgs", "JPEGImages")
LABEL_FOLDER_NAMES = ("annotations", "labels", "label", "masks", "SegmentationClass")
CLASS_FILE_NAMES = ("class_names.json", "classes.json", "id2label.json", "classes.txt")


def folder_spec(name: str, num_classes: int, ignore_index: int = 255, reduce_labels: bool = False) -> BenchmarkSpec:
    """The spec of a user's folder or dataset: label values are class ids (``reduce_labels``: 0 is void and ``k``
    is class ``k - 1``), `ignore_index` marks void pixels, anything else outside the classes is reported."""
    return BenchmarkSpec(
        key=name, display_name=name, registered_name=name, image_dirs={}, label_dirs={}, image_suffix="",
        label_suffix="", label_format="any", label_mapping="reduce_labels" if reduce_labels else "identity",
        num_classes=num_classes, num_prompts=num_classes, ignore_index=ignore_index,
        disk_ignore_value=0 if reduce_labels else ignore_index,
    )


def _split_folder(root: Path, split: str) -> Path:
    for candidate in dict.fromkeys([split, SPLIT_ALIASES.get(split, split), "validation", "val", "test"]):
        if (root / candidate).is_dir() and any((root / candidate / n).is_dir() for n in IMAGE_FOLDER_NAMES):
            return root / candidate
    return root


def load_folder_dataset(
    path: PathLike, split: str = "validation", class_names_file: PathLike | list[str] | None = None
) -> tuple[datasets.Dataset, list[str]]:
    """A user's folder of images and label maps, as `fgaseg synthetic` writes it or in the usual image-folder
    conventions, as a lazy `datasets.Dataset` (``id``, ``image``, ``annotation``) and its class names.

    Layouts: ``path`` (or its ``split`` subfolder, e.g. ``validation/``) holds a ``metadata.jsonl`` whose
    ``file_name`` / ``annotation_file_name`` keys name each pair (the `datasets` imagefolder convention that
    `fgaseg synthetic` writes), or an image folder (``images/``, ``JPEGImages/``, ...) and a label folder
    (``annotations/``, ``labels/``, ``masks/``, ``SegmentationClass/``) paired by file stem. The class list is
    `class_names_file` (a JSON list, an id -> name JSON object, or a text file with one name per line), else a
    ``class_names.json`` / ``classes.json`` / ``id2label.json`` / ``classes.txt`` in the split folder or above it.
    """
    import datasets

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder")
    folder = _split_folder(root, split)
    if class_names_file is None:
        for place in (folder, root, folder.parent):
            found = [place / n for n in CLASS_FILE_NAMES if (place / n).is_file()]
            if found:
                class_names_file = found[0]
                break
        else:
            raise ValueError(
                f"--data {root}: no class list; pass --classes FILE (a JSON list or one name per line) or put a "
                "class_names.json beside the split folders"
            )
    names = _read_class_names(class_names_file)
    pairs: list[tuple[str, Path, Path]] = []
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, label = folder / record["file_name"], folder / record["annotation_file_name"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f"{metadata}: line {number} needs file_name and annotation_file_name entries"
                ) from None
            pairs.append((Path(record["file_name"]).stem, image, label))
    else:
        image_dir = next((folder / n for n in IMAGE_FOLDER_NAMES if (folder / n).is_dir()), None)
        label_dir = next((folder / n for n in LABEL_FOLDER_NAMES if (folder / n).is_dir()), None)
        if image_dir is None or label_dir is None:
            raise ValueError(
                f"--data {folder}: expected a metadata.jsonl or an image folder ({', '.join(IMAGE_FOLDER_NAMES)}) "
                f"and a label folder ({', '.join(LABEL_FOLDER_NAMES)})"
            )
        images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() in LABEL_SUFFIXES}
        unpaired = sorted(set(labels) - set(images))
        if unpaired:
            raise ValueError(f"--data {folder}: label {unpaired[0]!r} in {label_dir} has no image in {image_dir}")
        pairs = [(stem, images[stem], labels[stem]) for stem in sorted(labels)]
    for _, image, label in pairs:
        for kind, file in (("image", image), ("label map", label)):
            if not file.is_file():
                raise ValueError(f"--data {folder}: {kind} {file} does not exist")
    features = datasets.Features(
        {"id": datasets.Value("string"), "image": datasets.Image(), "annotation": datasets.Image()}
    )
    dataset = datasets.Dataset.from_dict(
        {"id": [p[0] for p in pairs], "image": [str(p[1]) for p in pairs], "annotation": [str(p[2]) for p in pairs]},
        features=features,
    )
    return dataset, names
