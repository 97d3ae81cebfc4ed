"""What the web demo computes, without Gradio: one image + class names -> the overlay, the legend, the per-class
table, the label PNG and the masks of the hover view, exactly as `fgaseg segment` computes them.

`DemoSegmenter` holds the loaded pipelines (each model location is loaded once per process and kept, a few at a
time) and so their text-embedding caches, which are per (model, vocabulary): a vocabulary typed again is not
encoded again.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..prompt_templates import parse_label_list
from ..segment import (
    DEFAULT_MODEL_DIR,
    MODEL_FAMILIES,
    SegmentError,
    label_map_from_segments,
    load_pipeline,
    open_image_file,
    parse_device,
    parse_dtype,
    resolve_model_location,
)

# The model choice that stands for the model shipped inside the package.
DEMO_MODEL_CHOICE = "demo model (shipped with fgaseg_hf)"
MODEL_VOCABULARY = "the model's own"
# Display name -> key of `fgaseg_hf.data.benchmarks` (its shipped class lists).
VOCABULARY_PRESETS = {
    "ADE20K-150": "ade150",
    "COCO-Stuff-171": "coco",
    "PASCAL-Context-59": "pc59",
    "VOC-20": "voc20",
}
_KEPT_RESULTS = 32  # label PNGs kept on disk: Gradio copies each into its own cache when the request returns


def default_model_location() -> str:
    """The shipped demo model's folder (`fgaseg_hf.DEMO_MODEL` where the package defines it)."""
    import fgaseg_hf

    return str(getattr(fgaseg_hf, "DEMO_MODEL", DEFAULT_MODEL_DIR))


def format_label_list(names: list[str]) -> str:
    """The text-box form of a vocabulary, which `parse_label_list` reads back: comma-separated, or
    semicolon-separated when a name holds a comma (synonyms such as "chest of drawers, chest")."""
    return ("; " if any("," in name for name in names) else ", ").join(names)


def preset_names(preset: str) -> list[str]:
    """The class names of a benchmark preset (`VOCABULARY_PRESETS`), stripped as the text box gives them back."""
    from ..data.benchmarks import class_names

    if preset not in VOCABULARY_PRESETS:
        raise SegmentError(f"unknown vocabulary preset {preset!r}; known: {', '.join(VOCABULARY_PRESETS)}")
    return [name.strip() for name in class_names(VOCABULARY_PRESETS[preset])]


def _page_message(error: Exception) -> str:
    """`segment`'s messages name the CLI option (`--model X: ...`); the page has a model box instead."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    options = (("--model ", "model "), ("--labels ", "class names "), ("--sliding-window: ", "sliding window: "))
    for option, word in options:
        if text.startswith(option):
            return word + text[len(option):]
    return text


@dataclass
class ModelInfo:
    """What the page shows about a model: where it was loaded from, its family, its own vocabulary (None when it
    has none) and its sliding-window support and default."""

    location: str
    family: str
    vocabulary: list[str] | None
    sliding_window_supported: bool
    sliding_window_default: bool


@dataclass
class DemoResult:
    """One segmented image.

    Attributes:
        image: the input, upright (EXIF orientation applied), as the model saw it.
        names: the class names, in vocabulary order (label PNG values are positions in it).
        label_map: `(H, W)` int64 class ids.
        overlay: the RGB overlay with its legend drawn in, `render_overlay`'s picture.
        legend: `render_overlay`'s legend: `{"id", "name", "colour", "fraction"}` per class present, largest first.
        scores: the pipeline's score per class present.
        labels_png: the lossless label PNG (`save_label_map`), as `fgaseg segment` writes it.
        seconds: wall time of the request.
    """

    image: Image.Image
    names: list[str]
    label_map: np.ndarray
    overlay: Image.Image
    legend: list[dict]
    scores: dict[str, float]
    labels_png: Path
    seconds: float

    def table(self) -> list[list]:
        """Rows `[class, coverage %, score]` of the classes present, largest coverage first."""
        return [
            [entry["name"], round(100.0 * entry["fraction"], 2), round(float(self.scores.get(entry["name"], 0.0)), 4)]
            for entry in self.legend
        ]

    def annotations(self) -> list[tuple[np.ndarray, str]]:
        """`(mask, class name)` per class present, largest first; masks are `(H, W)` float32 in {0, 1}."""
        return [((self.label_map == entry["id"]).astype(np.float32), entry["name"]) for entry in self.legend]

    def colour_map(self) -> dict[str, str]:
        """Class name -> the overlay's colour as "#rrggbb", so that the hover view matches the overlay."""
        return {entry["name"]: "#{:02x}{:02x}{:02x}".format(*entry["colour"]) for entry in self.legend}

    def summary(self) -> str:
        present = ", ".join(f"{e['name']} {100 * e['fraction']:.1f}%" for e in self.legend)
        return f"{len(self.legend)} of {len(self.names)} classes present ({present}); {self.seconds:.2f} s"


class DemoSegmenter:
    """The demo's state across requests: the loaded pipelines (at most `max_models`, least recently used dropped)
    and a folder for the label PNGs it writes (its own temporary folder unless `work_dir` is given; the files it
    wrote there are removed by `close`).

    Requests on one model run one at a time (a lock per model), so a pipeline and its caches never serve two
    requests at once; the web app's queue makes further users wait rather than start more work.
    """

    def __init__(self, device: str = "cpu", dtype: str = "float32", max_models: int = 2, work_dir: str | None = None):
        if max_models < 1:
            raise SegmentError(f"max_models must be positive, got {max_models}")
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype, self.device)
        self.max_models = max_models
        self._pipelines: OrderedDict[str, tuple[object, threading.Lock]] = OrderedDict()
        self._load_lock = threading.Lock()
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="fgaseg-demo-")) if work_dir is None else Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._written: deque[Path] = deque()
        self._written_lock = threading.Lock()

    # ----------------------------------------------------------------- models
    @staticmethod
    def location(model: str | None) -> str:
        """The folder or Hub id a model choice names (empty or `DEMO_MODEL_CHOICE`: the shipped model)."""
        model = (model or "").strip()
        if not model or model == DEMO_MODEL_CHOICE:
            return default_model_location()
        try:
            return resolve_model_location(model)
        except SegmentError as error:
            raise SegmentError(_page_message(error)) from None

    def _entry(self, model: str | None):
        location = self.location(model)
        key = os.path.realpath(location) if os.path.exists(location) else location
        with self._load_lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
            try:
                pipe = load_pipeline(location, self.device, self.dtype)
            except SegmentError as error:
                raise SegmentError(_page_message(error)) from None
            entry = self._pipelines[key] = (pipe, threading.Lock())
            while len(self._pipelines) > self.max_models:
                self._pipelines.popitem(last=False)
            return entry

    def pipeline(self, model: str | None = None):
        """The open-vocabulary pipeline of a model choice, loaded on first use and kept."""
        return self._entry(model)[0]

    def model_info(self, model: str | None = None) -> ModelInfo:
        from ..pipeline_fgaseg import default_class_names

        pipe = self.pipeline(model)
        try:
            vocabulary = default_class_names(pipe.model.config)
        except ValueError:
            vocabulary = None
        model_type = getattr(pipe.model.config, "model_type", None)
        return ModelInfo(
            location=self.location(model),
            family=MODEL_FAMILIES.get(model_type, (str(model_type),))[0],
            vocabulary=vocabulary,
            sliding_window_supported=pipe.supports_sliding_window,
            sliding_window_default=bool(getattr(pipe.image_processor, "do_sliding_window", False)),
        )

    def vocabulary_text(self, preset: str, model: str | None = None) -> str:
        """The text-box contents of a preset: `MODEL_VOCABULARY` or a key of `VOCABULARY_PRESETS`."""
        if preset == MODEL_VOCABULARY:
            names = self.model_info(model).vocabulary
            if names is None:
                raise SegmentError(
                    "this model has no vocabulary of its own: type class names or pick a benchmark preset"
                )
            return format_label_list(names)
        return format_label_list(preset_names(preset))

    # ----------------------------------------------------------------- requests
    def segment(self, image, labels: str | None, model: str | None = None, sliding_window: bool | None = None,
                progress=None) -> DemoResult:
        """Segment one image (a file path, as `fgaseg segment` reads it, or a PIL image) into the classes of
        `labels` (text, comma- or semicolon-separated as the CLI parses it). `sliding_window=None` keeps the
        model's processor setting. `progress(fraction, description)` is told what is happening.
        Bad input raises `SegmentError` with one line meant for the page."""
        from ..visualization import render_overlay, save_label_map

        started = time.perf_counter()
        report = progress or (lambda fraction, description: None)
        if image is None:
            raise SegmentError("no image: upload a photo, take one with the webcam or pick an example")
        if labels is None or not str(labels).strip(" \t\n,;"):
            raise SegmentError("no class names: type some (e.g. \"sky, tree, car\") or pick a vocabulary preset")
        try:
            names = parse_label_list(str(labels))
        except (ValueError, TypeError) as error:
            raise SegmentError(f"class names: {error}") from None
        if isinstance(image, (str, os.PathLike)):
            loaded = open_image_file(str(image))
            picture, stem = loaded.image, loaded.path.stem
        elif isinstance(image, Image.Image):
            picture, stem = image, "image"
        else:
            raise SegmentError(f"the image must be a file path or a PIL image, got {type(image).__name__}")
        report(0.1, "loading the model")
        pipe, run_lock = self._entry(model)
        if sliding_window and not pipe.supports_sliding_window:
            family = MODEL_FAMILIES.get(getattr(pipe.model.config, "model_type", None), ("this",))[0]
            raise SegmentError(f"sliding window: {family} models have no sliding-window inference; untick it")
        report(0.3, f"segmenting into {len(names)} classes")
        with run_lock:
            segments = pipe(picture, candidate_labels=names, sliding_window=sliding_window)
        report(0.8, "drawing the overlay")
        label_map = label_map_from_segments(segments, names, (picture.height, picture.width))
        overlay, legend = render_overlay(picture, label_map, names)
        labels_png = self._new_file(f"{stem}_labels.png")
        save_label_map(labels_png, label_map)
        return DemoResult(
            image=picture, names=names, label_map=label_map, overlay=overlay, legend=legend,
            scores={segment["label"]: float(segment["score"]) for segment in segments}, labels_png=labels_png,
            seconds=time.perf_counter() - started,
        )

    def _new_file(self, name: str) -> Path:
        folder = self.work_dir / f"{next(self._counter):06d}"
        folder.mkdir()
        with self._written_lock:
            self._written.append(folder)
            while len(self._written) > _KEPT_RESULTS:
                shutil.rmtree(self._written.popleft(), ignore_errors=True)
        return folder / name

    def close(self) -> None:
        """Drop the loaded models and remove the files this segmenter wrote."""
        with self._load_lock:
            self._pipelines.clear()
        with self._written_lock:
            while self._written:
                shutil.rmtree(self._written.popleft(), ignore_errors=True)
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
