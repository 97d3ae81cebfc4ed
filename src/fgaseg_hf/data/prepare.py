"""`fgaseg prepare`: raw benchmark downloads -> the prepared layouts that `load_benchmark` reads.

    fgaseg prepare ade150 --root datasets --archive ~/Downloads/ADEChallengeData2016.zip
    fgaseg evaluate --model my-model --benchmarks ade150 --root datasets

Each benchmark's conversion follows the original's `datasets/prepare_*.py` (described in the shared benchmark notes
and in `fgaseg_hf.data.benchmarks`): the same label values, files and folders under `--root` (the original's
`$DETECTRON2_DATASETS`). `--archive` unpacks downloads (.zip, .tar, .tar.gz, .tgz) into the root first.

| benchmark | needs under root (after unpacking) |
|---|---|
| ade150 | `ADEChallengeData2016/{images,annotations}/validation` |
| ade847 | `ADE20K_2021_17_01/index_ade20k.pkl` and its `images/ADE/validation/...` (`*_seg.png`) |
| pc59 | `VOCdevkit/VOC2010/JPEGImages`, `VOCdevkit/VOC2010/trainval_merged.json` (needs `pycocotools`) |
| pc459 | `VOCdevkit/VOC2010/JPEGImages`, `VOCdevkit/VOC2010/trainval/*.mat` (needs `scipy`); the val id list ships here |
| voc20, voc20b | `VOCdevkit/VOC2012/{JPEGImages,ImageSets/Segmentation/val.txt,SegmentationClassAug}` |
| coco | `coco-stuff/images/{train2017,val2017}`, `coco-stuff/annotations/{train2017,val2017}` (stuffthingmaps) |

Differences from the original scripts: ADE-847 images and labels are resized with PyTorch (bilinear without
antialiasing, resp. nearest), which is OpenCV's arithmetic up to rounding of single grey levels; PC-459 values
outside 1..459 are reported as an error instead of wrapping around; every path is under `--root` (two of the
original scripts hard-code their authors' folders).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_8BIT = 255
IGNORE_16BIT = 65535
ADE847_MAX_SHORT_SIDE = 512
# PASCAL-Context ids (459-class numbering) of the 59 classes, in pc59.json order.
PC59_SOURCE_IDS = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115, 144, 158, 159,
    162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366, 368, 397,
    415, 416, 420, 424, 427, 440, 445, 454, 458,
)
# COCO-Stuff 0-based ids of thing classes absent from the 171-class set.
COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_NUM_SOURCE_IDS = 182


class PreparationError(ValueError):
    """A missing or malformed raw file, reported in one line."""


def _progress(items: Sequence, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="file", disable=not enabled)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise PreparationError(f"{what} not found: {path}")
    return path


def _lookup_table(source_ids: Iterable[int], size: int, fill: int, dtype) -> np.ndarray:
    """`table[source id] = train id` for the listed ids (in order), `fill` elsewhere."""
    table = np.full(size, fill, dtype=dtype)
    for train_id, source_id in enumerate(source_ids):
        table[source_id] = train_id
    return table


def _save_label(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def extract_archive(archive: str | Path, root: str | Path, progress: bool = True) -> None:
    """Unpacks a .zip / .tar / .tar.gz / .tgz download into `root`, refusing members that would land outside it."""
    archive, root = Path(archive), Path(root)
    _require(archive, "archive")
    root.mkdir(parents=True, exist_ok=True)
    resolved_root = root.resolve()

    def check(name: str) -> None:
        if not (resolved_root / name).resolve().is_relative_to(resolved_root):
            raise PreparationError(f"{archive}: member {name!r} would be written outside {root}")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in _progress(members, f"unpacking {archive.name}", progress):
                check(member.filename)
                handle.extract(member, root)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
            for member in _progress(members, f"unpacking {archive.name}", progress):
                check(member.name)
                handle.extract(member, root, filter="data")
    else:
        raise PreparationError(f"{archive}: not a zip or tar archive")


# ----------------------------------------------------------------------------------------------- ADE20K
def prepare_ade150(root: Path, progress: bool = True) -> int:
    """Raw ADE-150 annotations (0 = void, k = class k - 1) -> `annotations_detectron2/validation` (255 = void)."""
    base = root / "ADEChallengeData2016"
    source = _require(base / "annotations" / "validation", "ADE20K-150 raw annotations folder")
    files = sorted(source.glob("*.png"))
    for file in _progress(files, "ADE20K-150", progress):
        raw = np.asarray(Image.open(file))
        # uint8 wrap-around: void 0 becomes 255.
        _save_label((raw.astype(np.int64) - 1).astype(np.uint8), base / "annotations_detectron2" / "validation" / file.name)
    return len(files)


def ade847_lookup() -> np.ndarray:
    """ADE20K-full object id -> ADE-847 train id (65535 for every other id)."""
    text = resources.files("fgaseg_hf.data").joinpath("benchmark_classes", "ade847_ade_ids.json").read_text()
    ids = json.loads(text)
    return _lookup_table(ids, max(ids) + 1, IGNORE_16BIT, np.uint16)


def ade847_class_map(seg_rgb: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """An ADE20K-full `*_seg.png` (RGB) -> uint16 train ids: object id = R // 10 * 256 + G."""
    ids = seg_rgb[..., 0].astype(np.int64) // 10 * 256 + seg_rgb[..., 1].astype(np.int64)
    inside = ids < len(lookup)
    return np.where(inside, lookup[np.minimum(ids, len(lookup) - 1)], IGNORE_16BIT).astype(np.uint16)


def _ade847_size(height: int, width: int) -> tuple[int, int] | None:
    short, long = min(height, width), max(height, width)
    if short <= ADE847_MAX_SHORT_SIDE:
        return None
    new_long = int(long * ADE847_MAX_SHORT_SIDE / short + 0.5)
    return (ADE847_MAX_SHORT_SIDE, new_long) if height <= width else (new_long, ADE847_MAX_SHORT_SIDE)


def _resize(array: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(array.astype(np.float32))
    tensor = tensor.permute(2, 0, 1)[None] if tensor.dim() == 3 else tensor[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(tensor, size=size, mode=mode, **kwargs)[0]
    out = out.permute(1, 2, 0) if array.ndim == 3 else out[0]
    return out.round().clamp(0, np.iinfo(array.dtype).max).numpy().astype(array.dtype)


def prepare_ade847(root: Path, progress: bool = True) -> int:
    """ADE20K 2021 validation images (`ADE_val_*`) -> `images_detectron2` / `annotations_detectron2` (uint16 TIFF),
    shorter side capped at 512."""
    base = root / "ADE20K_2021_17_01"
    with open(_require(base / "index_ade20k.pkl", "ADE20K-full index"), "rb") as handle:
        index = pickle.load(handle)
    try:
        pairs = [(f, n) for f, n in zip(index["folder"], index["filename"]) if n.split("_")[1:2] == ["val"]]
    except (KeyError, TypeError):
        raise PreparationError(f"{base / 'index_ade20k.pkl'}: not an ADE20K index (no 'folder'/'filename' lists)") from None
    lookup = ade847_lookup()
    for folder, filename in _progress(pairs, "ADE20K-847", progress):
        image_path = _require(root / folder / filename, "ADE20K-full image")
        seg_path = _require(image_path.with_name(image_path.stem + "_seg.png"), "ADE20K-full class map")
        image = np.asarray(Image.open(image_path).convert("RGB"))
        label = ade847_class_map(np.asarray(Image.open(seg_path).convert("RGB")), lookup)
        size = _ade847_size(*label.shape)
        if size is not None:
            image, label = _resize(image, size, "bilinear"), _resize(label, size, "nearest")
        out_image = base / "images_detectron2" / "validation" / filename
        out_image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out_image, quality=75)
        _save_label(label, base / "annotations_detectron2" / "validation" / f"{Path(filename).stem}.tif")
    return len(pairs)


# ----------------------------------------------------------------------------------------------- PASCAL
def _decode_rle(segmentation: dict, height: int, width: int) -> np.ndarray:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise PreparationError("PASCAL-Context-59 needs pycocotools: pip install pycocotools") from None
    import warnings

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' numpy-2 `copy=` notice, not ours
        return mask_utils.decode(rle).astype(bool)


def prepare_pc59(root: Path, progress: bool = True) -> int:
    """PASCAL-in-Detail `trainval_merged.json` (val phase) -> `annotations_detectron2/pc59_val` (255 = not one of
    the 59 classes); later annotations paint over earlier ones."""
    base = root / "VOCdevkit" / "VOC2010"
    with open(_require(base / "trainval_merged.json", "PASCAL-in-Detail annotations"), encoding="utf-8") as handle:
        detail = json.load(handle)
    images = [i for i in detail["images"] if i.get("phase") == "val"]
    by_image: dict[int, list] = {}
    for annotation in detail.get("annos_segmentation", []):
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    lookup = _lookup_table(PC59_SOURCE_IDS, 460, IGNORE_8BIT, np.uint8)
    for info in _progress(images, "PASCAL-Context-59", progress):
        height, width = info["height"], info["width"]
        canvas = np.zeros((height, width), dtype=np.int64)
        for annotation in by_image.get(info["image_id"], []):
            canvas[_decode_rle(annotation["segmentation"], height, width)] = annotation["category_id"]
        if canvas.max() >= len(lookup):
            raise PreparationError(f"{info['file_name']}: category id {canvas.max()} is not a PASCAL-Context id")
        _save_label(lookup[canvas], base / "annotations_detectron2" / "pc59_val" / f"{Path(info['file_name']).stem}.png")
    return len(images)


def pascal_context_val_ids() -> list[str]:
    """The 5,104 PASCAL-Context validation image ids the original evaluates (its `pascalcontext_val.txt`)."""
    text = resources.files("fgaseg_hf.data").joinpath("benchmark_classes", "pascalcontext_val.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def prepare_pc459(root: Path, progress: bool = True, ids: Sequence[str] | None = None) -> int:
    """PASCAL-Context `trainval/<id>.mat` (`LabelMap`, 1..459) -> `annotations_detectron2/pc459_val` (uint16 TIFF,
    0..458). Ids without a .mat file are skipped, as in the original."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise PreparationError("PASCAL-Context-459 needs scipy: pip install scipy") from None
    base = root / "VOCdevkit" / "VOC2010"
    source = _require(base / "trainval", "PASCAL-Context .mat folder")
    present = [i for i in (ids if ids is not None else pascal_context_val_ids()) if (source / f"{i}.mat").is_file()]
    for image_id in _progress(present, "PASCAL-Context-459", progress):
        label_map = np.asarray(loadmat(source / f"{image_id}.mat")["LabelMap"]).astype(np.int64)
        if label_map.min() < 1 or label_map.max() > 459:
            raise PreparationError(f"{image_id}.mat: LabelMap values must lie in 1..459, got {label_map.min()}..{label_map.max()}")
        _save_label((label_map - 1).astype(np.uint16), base / "annotations_detectron2" / "pc459_val" / f"{image_id}.tif")
    return len(present)


def prepare_voc(root: Path, progress: bool = True) -> int:
    """VOC 2012 val (`SegmentationClassAug`: 0 background, 1..20, 255 void) -> `annotations_detectron2/val`
    (background ignored) and `annotations_detectron2_bg/val` (background = 20)."""
    base = root / "VOCdevkit" / "VOC2012"
    ids_file = _require(base / "ImageSets" / "Segmentation" / "val.txt", "VOC 2012 val list")
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    source = _require(base / "SegmentationClassAug", "VOC 2012 SegmentationClassAug folder")
    without_background = np.full(256, IGNORE_8BIT, dtype=np.uint8)
    without_background[1:21] = np.arange(20)
    with_background = without_background.copy()
    with_background[0] = 20
    written = 0
    for image_id in _progress(ids, "PASCAL VOC", progress):
        raw = np.asarray(Image.open(_require(source / f"{image_id}.png", "VOC label")))
        for table, folder in ((without_background, "annotations_detectron2"), (with_background, "annotations_detectron2_bg")):
            label = table[raw]
            if (label != IGNORE_8BIT).any():  # the original skips masks with nothing to score
                _save_label(label, base / folder / "val" / f"{image_id}.png")
        written += 1
    return written


# ----------------------------------------------------------------------------------------------- COCO-Stuff
def prepare_coco(root: Path, progress: bool = True) -> int:
    """COCO-Stuff stuffthingmaps (0-based ids, 255 unlabeled) -> 171 train ids in `annotations_detectron2`."""
    base = root / "coco-stuff"
    used = [i for i in range(COCO_NUM_SOURCE_IDS) if i not in COCO_UNUSED_IDS]
    lookup = _lookup_table(used, 256, IGNORE_8BIT, np.uint8)
    count = 0
    for split in ("train2017", "val2017"):
        source = base / "annotations" / split
        if not source.is_dir():
            continue
        files = sorted(source.glob("*.png"))
        for file in _progress(files, f"COCO-Stuff {split}", progress):
            _save_label(lookup[np.asarray(Image.open(file))], base / "annotations_detectron2" / split / file.name)
        count += len(files)
    if count == 0:
        raise PreparationError(f"COCO-Stuff stuffthingmaps not found under {base / 'annotations'}")
    return count


PREPARERS: dict[str, Callable[..., int]] = {
    "ade150": prepare_ade150, "ade847": prepare_ade847, "pc59": prepare_pc59, "pc459": prepare_pc459,
    "voc20": prepare_voc, "voc20b": prepare_voc, "coco": prepare_coco,
}


def prepare(benchmark: str, root: str | Path, archives: Sequence[str | Path] = (), progress: bool = True) -> int:
    """Unpacks `archives` into `root`, then writes `benchmark`'s prepared labels (and images for ADE-847).

    Returns:
        The number of label files processed.
    """
    if benchmark not in PREPARERS:
        raise PreparationError(f"unknown benchmark {benchmark!r}; known: {', '.join(PREPARERS)}")
    root = Path(root)
    for archive in archives:
        extract_archive(archive, root, progress)
    return PREPARERS[benchmark](root, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fgaseg prepare", description=__doc__.split("\n")[0])
    parser.add_argument("benchmarks", nargs="+", choices=sorted(PREPARERS), help="benchmarks to prepare")
    parser.add_argument("--root", default="datasets", help="the datasets folder (default: %(default)s)")
    parser.add_argument("--archive", action="append", default=[], help="a download to unpack into --root first (repeat)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        archives = list(args.archive)
        done = set()
        for benchmark in args.benchmarks:
            function = PREPARERS[benchmark]
            if function in done:  # voc20 and voc20b come from one pass
                continue
            count = prepare(benchmark, args.root, archives, progress=not args.no_progress)
            archives = []
            done.add(function)
            print(f"{benchmark}: {count} label files prepared under {args.root}")
    except (PreparationError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
