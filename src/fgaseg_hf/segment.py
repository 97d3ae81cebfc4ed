"""`fgaseg segment`: images + class names -> label PNGs, overlay PNGs with a legend, and optional JSON.

Every input is checked before anything is written, and each file is written under a temporary name and renamed,
so a failure never leaves partial outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .prompt_templates import parse_label_list
from .safe_io import OutputFolder, OutputFolderError, atomic_write, model_loading_errors

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")


class SegmentError(ValueError):
    """A problem with the user's input, reported as one line."""


@dataclass
class LoadedImage:
    path: Path
    image: Image.Image  # EXIF orientation applied; any mode (the image processor converts it)


def open_image_file(path: str) -> LoadedImage:
    """Open and fully decode an image file (EXIF orientation applied); `SegmentError` names what is wrong."""
    file = Path(path)
    if not file.exists():
        raise SegmentError(f"{path}: no such file")
    if not file.is_file():
        raise SegmentError(f"{path}: not a file")
    if file.stat().st_size == 0:
        raise SegmentError(f"{path}: empty file (zero bytes)")
    try:
        with Image.open(file) as handle:
            handle.load()
            image = ImageOps.exif_transpose(handle)
    except UnidentifiedImageError:
        raise SegmentError(f"{path}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise SegmentError(f"{path}: cannot decode the image ({error}); the file may be truncated or corrupt") from None
    if image.width == 0 or image.height == 0:
        raise SegmentError(f"{path}: the image has zero size ({image.width}x{image.height})")
    return LoadedImage(file, image)


def parse_device(device: str):
    import torch

    kind = device.split(":")[0]
    if kind not in DEVICES or (":" in device and not device.split(":", 1)[1].isdigit()):
        raise SegmentError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SegmentError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def parse_dtype(name: str, device):
    import torch

    if name not in DTYPES:
        raise SegmentError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise SegmentError("float16 needs a GPU (--device cuda); use bfloat16 or float32 on the CPU")
    return getattr(torch, name)


# The model families `fgaseg segment` runs: model_type -> (name, model class, processor class, the config holding the
# text tower's settings). Classes are "module.Class" names in this package, imported when used.
MODEL_FAMILIES = {
    "fgaseg": ("FGA-Seg", "modeling_fgaseg.FGASegModel", "processing_fgaseg.FGASegProcessor", "clip_config.text_config"),
    "catseg": ("CAT-Seg", "modeling_catseg.CATSegModel", "processing_fgaseg.FGASegProcessor", "clip_config.text_config"),
    "ita": ("ITA", "modeling_ita.ITAModel", "processing_ita.ITAProcessor", "text_config"),
    "fcclip": ("FC-CLIP", "modeling_fcclip.FCCLIPModel", "processing_ita.ITAProcessor", "text_config"),
}


def _family_class(dotted: str):
    import importlib

    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def _unsupported(model: str, model_type) -> SegmentError:
    names = " nor an ".join(f"{family[0]} model" for family in MODEL_FAMILIES.values())
    return SegmentError(
        f"--model {model}: not an {names} (its config has model_type {model_type!r}; supported: "
        f"{', '.join(repr(t) for t in MODEL_FAMILIES)})"
    )


def resolve_model_location(model: str | None) -> str:
    """The folder or Hub id to load; checks that a local folder holds a model of a supported family
    (`MODEL_FAMILIES`: FGA-Seg, ITA, FC-CLIP)."""
    if model is None:
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise SegmentError("--model is required: no embedded default model is installed with this package")
        return str(DEFAULT_MODEL_DIR)
    path = Path(model)
    if path.exists():
        if not path.is_dir():
            raise SegmentError(f"--model {model}: not a folder (give a model folder or a Hub id)")
        config = path / "config.json"
        if not config.is_file():
            raise SegmentError(f"--model {model}: not a model folder (no config.json)")
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SegmentError(f"--model {model}: config.json is not valid JSON") from None
        if model_type not in MODEL_FAMILIES:
            raise _unsupported(model, model_type)
        return str(path)
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise SegmentError(f"--model {model}: no such folder (and not a Hub id of the form owner/name)")
    return model


def load_model_and_processor(location: str, dtype=None):
    """`(model in eval mode, its processor)` from a model folder or Hub id of a supported family (FGA-Seg:
    `FGASegModel` / `FGASegProcessor`; ITA: `ITAModel` / `ITAProcessor`); `SegmentError` when it cannot."""
    from transformers import AutoConfig

    from .clip_tokenizer import build_clip_tokenizer

    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SegmentError(f"cannot load the model {location}: {first_line}") from None
    family = MODEL_FAMILIES.get(config.model_type)
    if family is None:
        raise _unsupported(location, config.model_type)
    _, model_path, processor_path, text_path = family
    model_class, processor_class = _family_class(model_path), _family_class(processor_path)
    try:
        model = model_class.from_pretrained(location, dtype=dtype)
    except model_loading_errors() as error:  # missing, empty, truncated or random-bytes weights
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SegmentError(f"cannot load the model {location}: {first_line}") from None
    try:
        processor = processor_class.from_pretrained(location)
    except (OSError, ValueError, TypeError):
        # A folder written without processor files (e.g. by an older converter): CLIP's own tokenizer fits any
        # model with CLIP's text vocabulary.
        text_config = model.config
        for part in text_path.split("."):
            text_config = getattr(text_config, part)
        if text_config.vocab_size != 49408:
            raise SegmentError(f"{location} has no processor/tokenizer files and its text vocabulary is not CLIP's") from None
        processor = processor_class.from_model_config(
            model.config, build_clip_tokenizer(text_config.max_position_embeddings)
        )
    check_processor_family(processor, processor_class, model.config, location)
    return model.eval(), processor


def check_processor_family(processor, processor_class, model_config, location) -> None:
    """`SegmentError` when a folder's processor files belong to another model family (e.g. an ITA image processor
    saved beside an FGA-Seg model): its inputs would not fit the model."""
    expected = _IMAGE_PROCESSORS.get(processor_class.__name__)
    found = type(getattr(processor, "image_processor", None)).__name__
    if expected is not None and found != expected:
        raise SegmentError(
            f"{location}: its processor files are for another model family ({found}); this "
            f"{model_config.model_type} model needs a {expected} (save the matching processor in the folder)"
        )


# The image processor each processor class pairs with (a folder may carry another family's files).
_IMAGE_PROCESSORS = {"FGASegProcessor": "FGASegImageProcessor", "ITAProcessor": "ITAImageProcessor"}


def load_pipeline(location: str, device, dtype):
    """The open-vocabulary pipeline on a model folder or Hub id."""
    from .pipeline_fgaseg import OpenVocabularySegmentationPipeline

    model, processor = load_model_and_processor(location, dtype)
    return OpenVocabularySegmentationPipeline(
        model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor, device=device
    )


def label_map_from_segments(segments: list[dict], names: list[str], size: tuple[int, int]) -> np.ndarray:
    """`(H, W)` class ids (positions in `names`) from the pipeline's per-class masks."""
    label_map = np.zeros(size, dtype=np.int64)
    index = {name: i for i, name in enumerate(names)}
    for segment in segments:
        label_map[np.asarray(segment["mask"]) > 0] = index[segment["label"]]
    return label_map


def output_stems(paths: list[Path]) -> list[str]:
    """File stems for the outputs; images that share a name get `-2`, `-3`, ... suffixes."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


def segment_images(
    images: list[str],
    labels: str | None,
    model: str | None = None,
    output: str = "fgaseg-output",
    sliding_window: bool | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict]:
    """Segment image files and write `<stem>_labels.png` and `<stem>_overlay.png` into `output`; returns one record
    per image (`image`, `labels_png`, `overlay_png`, `classes`: {name: pixel fraction}, `scores`).

    `output` may hold other files; a file of the same name that fgaseg did not write is never replaced, and one
    an earlier run wrote only with `overwrite`."""
    from tqdm.auto import tqdm

    from .pipeline_fgaseg import default_class_names, has_sliding_window
    from .visualization import coverage, render_overlay, save_label_map, save_overlay

    names = parse_label_list(labels) if labels is not None else None
    torch_device = parse_device(device)
    torch_dtype = parse_dtype(dtype, torch_device)
    if batch_size < 1:
        raise SegmentError(f"--batch-size must be positive, got {batch_size}")
    if not images:
        raise SegmentError("no images given")
    loaded = [open_image_file(path) for path in images]
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise SegmentError(f"--output {output}: exists and is not a folder")
    stems = output_stems([i.path for i in loaded])
    outputs = OutputFolder(out_dir, overwrite, additive=True)
    written = [f"{stem}_{kind}.png" for stem in stems for kind in ("labels", "overlay")]
    try:
        outputs.check(written)
    except OutputFolderError as error:
        raise SegmentError(str(error)) from None
    pipe = load_pipeline(resolve_model_location(model), torch_device, torch_dtype)
    if sliding_window and not has_sliding_window(pipe.image_processor):
        family = MODEL_FAMILIES.get(pipe.model.config.model_type, ("this",))[0]
        raise SegmentError(f"--sliding-window: {family} models have no sliding-window inference")
    if names is None:
        try:
            names = default_class_names(pipe.model.config)
        except ValueError:
            raise SegmentError("--labels is required: this model has no default vocabulary") from None

    outputs.claim(written)
    results = pipe(
        (item.image for item in loaded), candidate_labels=names, sliding_window=sliding_window, batch_size=batch_size
    )
    records = []
    bar = tqdm(total=len(loaded), desc="segmenting", unit="image", disable=not progress or len(loaded) < 2)
    for item, stem, segments in zip(loaded, stems, results):
        label_map = label_map_from_segments(segments, names, (item.image.height, item.image.width))
        overlay, legend = render_overlay(item.image, label_map, names)
        labels_png, overlay_png = out_dir / f"{stem}_labels.png", out_dir / f"{stem}_overlay.png"
        atomic_write(labels_png, lambda p: save_label_map(p, label_map), suffix=".png")
        atomic_write(overlay_png, lambda p: save_overlay(p, overlay, legend), suffix=".png")
        fractions = coverage(label_map, len(names))
        records.append(
            {
                "image": str(item.path),
                "labels_png": str(labels_png),
                "overlay_png": str(overlay_png),
                "classes": {name: round(float(f), 6) for name, f in zip(names, fractions)},
                "scores": {segment["label"]: segment["score"] for segment in segments},
            }
        )
        bar.update()
    bar.close()
    return records
