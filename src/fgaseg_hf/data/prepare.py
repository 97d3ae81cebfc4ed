"""`fgaseg prepare`: raw benchmark downloads -> the prepared layouts that `load_benchmark` reads.

    fgaseg prepare ade150 --root datasets --archive ~/Downloads/ADEChallengeData2016.zip
    fgaseg evaluate --model my-model --benchmarks ade150 --root datasets

Each benchmark's conversion follows the original's `datasets/prepare_*.py` (described in the shared benchmark notes
and in `fgaseg_hf.data.benchmarks`): the same label values, files and folders under `--root` (the original's
`$DETECTRON2_DATASETS`). `--archive` unpacks downloads (.zip, .tar, .tar.gz, .tgz) into the root first.

Nothing of the user's is replaced: what this command writes (unpacked and prepared files) is recorded in the root's
`.fgaseg-written.json`; a file it would write that exists and is not recorded there stops it (one line naming the
file), and one an earlier run wrote is replaced only with `--overwrite`. Archives are unpacked into a staging
folder of their own inside the root, then moved; links, special files and names that climb out are refused.

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
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath

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


def _read(path: Path, reader: Callable, what: str = "file"):
    """`reader(path)`, with any failure of a corrupt, truncated or unreadable raw file (a user's download, not a
    bug here) reported as one `PreparationError` line naming it."""
    try:
        return reader(path)
    except PreparationError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PreparationError(f"{path}: cannot read this {what} ({detail}); it may be truncated or corrupt") from None


def _image_array(path: Path, mode: str | None = None) -> np.ndarray:
    def read(file):
        with Image.open(file) as handle:
            return np.asarray(handle.convert(mode) if mode else handle)

    return _read(path, read, "image")


def _lookup_table(source_ids: Iterable[int], size: int, fill: int, dtype) -> np.ndarray:
    """`table[source id] = train id` for the listed ids (in order), `fill` elsewhere."""
    table = np.full(size, fill, dtype=dtype)
    for train_id, source_id in enumerate(source_ids):
        table[source_id] = train_id
    return table


def _save_label(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _outputs(root: Path, overwrite: bool = False):
    from ..safe_io import OutputFolder

    return OutputFolder(root, overwrite, option="--root", additive=True)


def _claim(root: Path, outputs, paths: Iterable[Path]) -> None:
    """Record the files about to be written under `root` (all at once: the manifest is rewritten per call);
    `PreparationError` when one exists that this command did not write, or wrote before and `--overwrite` is off."""
    from ..safe_io import OutputFolderError

    paths = list(paths)
    if not paths:
        return
    outputs = outputs if outputs is not None else _outputs(root)
    try:
        outputs.claim([path.relative_to(root).as_posix() for path in paths])
    except OutputFolderError as error:
        raise PreparationError(str(error)) from None


def _member_name(archive: Path, name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if not path.parts or path.is_absolute() or ".." in path.parts or path.parts[0].endswith(":"):
        raise PreparationError(f"{archive}: member {name!r} would be written outside the folder it is unpacked into")
    return path.as_posix()


def _archive_files(archive: Path, handle) -> list[str]:
    """The files an open archive holds (relative paths). Links and special files are refused: a benchmark download
    holds neither, and a link unpacked first could carry a later member outside the root."""
    names = []
    if isinstance(handle, zipfile.ZipFile):
        for member in handle.infolist():
            if stat.S_ISLNK(member.external_attr >> 16):
                raise PreparationError(f"{archive}: member {member.filename!r} is a link; only files and folders are unpacked")
            name = _member_name(archive, member.filename)  # folders too: none may climb out either
            if not member.is_dir():
                names.append(name)
        return names
    for member in handle.getmembers():
        if not (member.isfile() or member.isdir()):
            kind = "link" if member.issym() or member.islnk() else "special file"
            raise PreparationError(f"{archive}: member {member.name!r} is a {kind}; only files and folders are unpacked")
        name = _member_name(archive, member.name)
        if member.isfile():
            names.append(name)
    return names


def extract_archive(archive: str | Path, root: str | Path, progress: bool = True, outputs=None) -> list[str]:
    """Unpacks a .zip / .tar / .tar.gz / .tgz download into `root`; returns the files it wrote (relative paths).

    The member list is checked first (nothing is unpacked when one member is refused or would replace a file this
    command did not write); the members go into a staging folder inside `root`, then are moved into place."""
    archive, root = Path(archive), Path(root)
    _require(archive, "archive")
    outputs = outputs if outputs is not None else _outputs(root)
    try:
        if zipfile.is_zipfile(archive):
            opened = zipfile.ZipFile(archive)
        elif tarfile.is_tarfile(archive):
            opened = tarfile.open(archive)
        else:
            raise PreparationError(f"{archive}: not a zip or tar archive")
        with opened as handle:
            _check_members(archive, outputs, _archive_files(archive, handle))
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=root, prefix=".fgaseg-unpack-"))
            try:
                members = handle.infolist() if isinstance(handle, zipfile.ZipFile) else handle.getmembers()
                for member in _progress(members, f"unpacking {archive.name}", progress):
                    if isinstance(handle, zipfile.ZipFile):
                        handle.extract(member, staging)
                    else:
                        handle.extract(member, staging, filter="data")
                unpacked = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
                _claim(root, outputs, [root / name for name in unpacked])
                for name in unpacked:
                    (root / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(staging / name, root / name)  # a rename, unless the user linked a folder elsewhere
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
        raise PreparationError(f"{archive}: truncated or corrupt archive ({error})") from None
    return unpacked


def _check_members(archive: Path, outputs, names: list[str]) -> None:
    from ..safe_io import OutputFolderError

    try:
        outputs.check(names)
    except OutputFolderError as error:
        raise PreparationError(f"{archive}: {error}") from None


# ----------------------------------------------------------------------------------------------- ADE20K
def prepare_ade150(root: Path, progress: bool = True, outputs=None) -> int:
    """Raw ADE-150 annotations (0 = void, k = class k - 1) -> `annotations_detectron2/validation` (255 = void)."""
    base = root / "ADEChallengeData2016"
    source = _require(base / "annotations" / "validation", "ADE20K-150 raw annotations folder")
    files = sorted(source.glob("*.png"))
    target = base / "annotations_detectron2" / "validation"
    _claim(root, outputs, [target / file.name for file in files])
    for file in _progress(files, "ADE20K-150", progress):
        raw = _image_array(file)
        # uint8 wrap-around: void 0 becomes 255.
        _save_label((raw.astype(np.int64) - 1).astype(np.uint8), target / file.name)
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


def prepare_ade847(root: Path, progress: bool = True, outputs=None) -> int:
    """ADE20K 2021 validation images (`ADE_val_*`) -> `images_detectron2` / `annotations_detectron2` (uint16 TIFF),
    shorter side capped at 512."""
    base = root / "ADE20K_2021_17_01"
    from ..safe_io import UnsafeFileError, load_restricted_pickle

    try:
        # Containers and numpy arrays only: a pickle that names any other global is refused, never run.
        index = load_restricted_pickle(_require(base / "index_ade20k.pkl", "ADE20K-full index"), "ADE20K-full index")
    except UnsafeFileError as error:
        raise PreparationError(str(error)) from None
    try:
        pairs = [(f, n) for f, n in zip(index["folder"], index["filename"]) if n.split("_")[1:2] == ["val"]]
    except (KeyError, TypeError):
        raise PreparationError(f"{base / 'index_ade20k.pkl'}: not an ADE20K index (no 'folder'/'filename' lists)") from None
    lookup = ade847_lookup()
    _claim(root, outputs, [path for _, filename in pairs for path in (
        base / "images_detectron2" / "validation" / filename,
        base / "annotations_detectron2" / "validation" / f"{Path(filename).stem}.tif")])
    for folder, filename in _progress(pairs, "ADE20K-847", progress):
        image_path = _require(root / folder / filename, "ADE20K-full image")
        seg_path = _require(image_path.with_name(image_path.stem + "_seg.png"), "ADE20K-full class map")
        image = _image_array(image_path, "RGB")
        label = ade847_class_map(_image_array(seg_path, "RGB"), lookup)
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


def prepare_pc59(root: Path, progress: bool = True, outputs=None) -> int:
    """PASCAL-in-Detail `trainval_merged.json` (val phase) -> `annotations_detectron2/pc59_val` (255 = not one of
    the 59 classes); later annotations paint over earlier ones."""
    base = root / "VOCdevkit" / "VOC2010"
    detail = _read(_require(base / "trainval_merged.json", "PASCAL-in-Detail annotations"),
                   lambda path: json.loads(path.read_text(encoding="utf-8")), "JSON file")
    if not isinstance(detail, dict) or not isinstance(detail.get("images"), list):
        raise PreparationError(f"{base / 'trainval_merged.json'}: not a PASCAL-in-Detail file (no 'images' list)")
    images = [i for i in detail["images"] if i.get("phase") == "val"]
    by_image: dict[int, list] = {}
    for annotation in detail.get("annos_segmentation", []):
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    lookup = _lookup_table(PC59_SOURCE_IDS, 460, IGNORE_8BIT, np.uint8)
    target = base / "annotations_detectron2" / "pc59_val"
    _claim(root, outputs, [target / f"{Path(info['file_name']).stem}.png" for info in images])
    for info in _progress(images, "PASCAL-Context-59", progress):
        height, width = info["height"], info["width"]
        canvas = np.zeros((height, width), dtype=np.int64)
        for annotation in by_image.get(info["image_id"], []):
            canvas[_decode_rle(annotation["segmentation"], height, width)] = annotation["category_id"]
        if canvas.max() >= len(lookup):
            raise PreparationError(f"{info['file_name']}: category id {canvas.max()} is not a PASCAL-Context id")
        _save_label(lookup[canvas], target / f"{Path(info['file_name']).stem}.png")
    return len(images)


def pascal_context_val_ids() -> list[str]:
    """The 5,104 PASCAL-Context validation image ids the original evaluates (its `pascalcontext_val.txt`)."""
    text = resources.files("fgaseg_hf.data").joinpath("benchmark_classes", "pascalcontext_val.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def prepare_pc459(root: Path, progress: bool = True, ids: Sequence[str] | None = None, outputs=None) -> int:
    """PASCAL-Context `trainval/<id>.mat` (`LabelMap`, 1..459) -> `annotations_detectron2/pc459_val` (uint16 TIFF,
    0..458). Ids without a .mat file are skipped, as in the original."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise PreparationError("PASCAL-Context-459 needs scipy: pip install scipy") from None
    base = root / "VOCdevkit" / "VOC2010"
    source = _require(base / "trainval", "PASCAL-Context .mat folder")
    present = [i for i in (ids if ids is not None else pascal_context_val_ids()) if (source / f"{i}.mat").is_file()]
    target = base / "annotations_detectron2" / "pc459_val"
    _claim(root, outputs, [target / f"{image_id}.tif" for image_id in present])
    for image_id in _progress(present, "PASCAL-Context-459", progress):
        label_map = _read(source / f"{image_id}.mat", lambda path: np.asarray(loadmat(path)["LabelMap"]).astype(np.int64),
                          "MATLAB file")
        if label_map.min() < 1 or label_map.max() > 459:
            raise PreparationError(f"{image_id}.mat: LabelMap values must lie in 1..459, got {label_map.min()}..{label_map.max()}")
        _save_label((label_map - 1).astype(np.uint16), target / f"{image_id}.tif")
    return len(present)


def prepare_voc(root: Path, progress: bool = True, outputs=None) -> int:
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
    # Both label sets of every id (a mask with nothing to score is then not written: recorded, absent).
    _claim(root, outputs, [base / folder / "val" / f"{image_id}.png" for image_id in ids
                           for folder in ("annotations_detectron2", "annotations_detectron2_bg")])
    for image_id in _progress(ids, "PASCAL VOC", progress):
        raw = _image_array(_require(source / f"{image_id}.png", "VOC label"))
        for table, folder in ((without_background, "annotations_detectron2"), (with_background, "annotations_detectron2_bg")):
            label = table[raw]
            if (label != IGNORE_8BIT).any():  # the original skips masks with nothing to score
                _save_label(label, base / folder / "val" / f"{image_id}.png")
        written += 1
    return written


# ----------------------------------------------------------------------------------------------- COCO-Stuff
def prepare_coco(root: Path, progress: bool = True, outputs=None) -> int:
    """COCO-Stuff stuffthingmaps (0-based ids, 255 unlabeled) -> 171 train ids in `annotations_detectron2`."""
    base = root / "coco-stuff"
    used = [i for i in range(COCO_NUM_SOURCE_IDS) if i not in COCO_UNUSED_IDS]
    lookup = _lookup_table(used, 256, IGNORE_8BIT, np.uint8)
    count = 0
    splits = {split: sorted((base / "annotations" / split).glob("*.png")) for split in ("train2017", "val2017")
              if (base / "annotations" / split).is_dir()}
    _claim(root, outputs, [base / "annotations_detectron2" / split / file.name for split, files in splits.items()
                           for file in files])
    for split, files in splits.items():
        for file in _progress(files, f"COCO-Stuff {split}", progress):
            _save_label(lookup[_image_array(file)], base / "annotations_detectron2" / split / file.name)
        count += len(files)
    if count == 0:
        raise PreparationError(f"COCO-Stuff stuffthingmaps not found under {base / 'annotations'}")
    return count


PREPARERS: dict[str, Callable[..., int]] = {
    "ade150": prepare_ade150, "ade847": prepare_ade847, "pc59": prepare_pc59, "pc459": prepare_pc459,
    "voc20": prepare_voc, "voc20b": prepare_voc, "coco": prepare_coco,
}


def prepare(benchmark: str, root: str | Path, archives: Sequence[str | Path] = (), progress: bool = True,
            overwrite: bool = False) -> int:
    """Unpacks `archives` into `root`, then writes `benchmark`'s prepared labels (and images for ADE-847).

    A file either step would write that exists is replaced only when an earlier run wrote it and `overwrite` is
    set; otherwise `PreparationError` names it (the user's files are never replaced).

    Returns:
        The number of label files processed.
    """
    if benchmark not in PREPARERS:
        raise PreparationError(f"unknown benchmark {benchmark!r}; known: {', '.join(PREPARERS)}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PreparationError(f"--root {root}: exists and is not a folder")
    outputs = _outputs(root, overwrite)
    for archive in archives:
        extract_archive(archive, root, progress, outputs)
    return PREPARERS[benchmark](root, progress=progress, outputs=outputs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fgaseg prepare", description=__doc__.split("\n")[0])
    parser.add_argument("benchmarks", nargs="+", choices=sorted(PREPARERS), help="benchmarks to prepare")
    parser.add_argument("--root", default="datasets", help="the datasets folder (default: %(default)s)")
    parser.add_argument("--archive", action="append", default=[], help="a download to unpack into --root first (repeat)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files an earlier run of this command wrote under --root (files it did not write "
                        "are never replaced)")
    args = parser.parse_args(argv)
    try:
        archives = list(args.archive)
        done = set()
        for benchmark in args.benchmarks:
            function = PREPARERS[benchmark]
            if function in done:  # voc20 and voc20b come from one pass
                continue
            count = prepare(benchmark, args.root, archives, progress=not args.no_progress, overwrite=args.overwrite)
            archives = []
            done.add(function)
            print(f"{benchmark}: {count} label files prepared under {args.root}")
    except (PreparationError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
