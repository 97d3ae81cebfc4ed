"""`fgaseg evaluate` (also `scripts/evaluate.py`): a model on benchmarks -> mIoU as JSON, Markdown and a model card.

    fgaseg evaluate --model outputs/my_run --benchmarks ade150,pc59 --root datasets --output eval.json

Protocols:
- "original" (default): what the original's `eval.sh` does for every benchmark: the image's shorter side resized to
  640 (longer side at most 2560, PIL bilinear as detectron2), the sliding window (the image squashed to the
  processor's `sliding_window_canvas`, crops of the CLIP resolution plus one global view), the original's
  pre/post-processing (`processing_mode="original"`), class attention without pooling (`POOLING_SIZES [1, 1]`), the
  model's prompt templates, names cut at their first ", ". Predictions are made at each label map's size.
- "whole": each image resized alone to the CLIP resolution (the processor's default mode), model as saved. Faster,
  not comparable with published numbers.

ITA models are evaluated with their own test-time pre-processing (shortest edge and size cap from their config, as
the original's detectron2 mapper) in either protocol: ITA has no sliding window and no pooling setting. ITA and
FC-CLIP models prompt the prepared benchmarks with FC-CLIP's published synonym lists
(`data/benchmark_classes/fcclip/`); `--class-names plain` gives them CAT-Seg's one-name lists instead.

The reported mIoU follows detectron2's `SemSegEvaluator` (the published numbers): the mean over classes that have
ground-truth pixels in the split. The `evaluate` library's definition (every class with a non-empty union) is
reported beside it as `mIoU_evaluate`; both come from one streaming confusion matrix.

Under `accelerate launch` / `torchrun` every process evaluates its share of the images and the counts are summed;
the main process writes the files. Each process saves its counts every `--save-every` images in `--state-dir`
(`fgaseg_hf.evaluation_state`), and `--resume` continues an interrupted run with exactly the uninterrupted result.

Besides the prepared benchmarks (`--benchmarks`, `--root`), `--data` scores a folder of images and label maps and
`--dataset` any `datasets`-loadable set, each with a class list (`fgaseg_hf.evaluation_data`). The report counts the
pixels scored and ignored, the label ids outside the class list (not scored; `--strict` refuses them) and the classes
without ground truth (`fgaseg_hf.evaluation_report`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .evaluation_report import MIOU_DEFINITION
from .evaluation_data import (  # noqa: F401  (EvaluationError, the sources: public here as before)
    DATASET_TYPES,
    EvaluationError,
    EvaluationSource,
    _label_array,
    _open_image,
    _strict_check,
    _undecoded,
    benchmark_source,
    dataset_source,
    folder_source,
)
from .lazy_imports import LazyModule

# Imported on first use, so that `fgaseg evaluate --help` and argument errors answer without torch.
torch = LazyModule("torch")


def has_sliding_window(image_processor) -> bool:
    from .pipeline_fgaseg import has_sliding_window as check

    return check(image_processor)


PROTOCOLS = ("original", "whole")
# "published": ITA-family models (FC-CLIP, ITA) prompt the benchmarks with FC-CLIP's synonym lists, as their papers
# did; "plain": every model gets the one-name-per-class lists of CAT-Seg.
CLASS_LISTS = ("published", "plain")
PUBLISHED_LIST_MODEL_TYPES = ("ita", "fcclip")
# Slow images (ADE20K-847 with the sliding window takes ~40 s each on a CPU): the counts are saved at least this
# often, whatever --save-every says.
SAVE_SECONDS = 300


@dataclass
class EvaluationSettings:
    """How images are evaluated (see the module docs)."""

    protocol: str = "original"
    batch_size: int = 1
    limit: int | None = None
    min_size: int = 640
    max_size: int = 2560
    strict: bool = False
    class_names: str = "published"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise EvaluationError(f"unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if self.class_names not in CLASS_LISTS:
            raise EvaluationError(f"unknown class lists {self.class_names!r}: use one of {', '.join(CLASS_LISTS)}")
        if self.batch_size < 1:
            raise EvaluationError(f"batch size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise EvaluationError(f"limit must be at least 1, got {self.limit}")

    def describe(self, image_processor, model_type: str | None = None) -> dict[str, Any]:
        description: dict[str, Any] = {"name": self.protocol, "batch_size": self.batch_size}
        if model_type in PUBLISHED_LIST_MODEL_TYPES:
            description["class_names"] = self.class_names
        if self.protocol == "original" and has_sliding_window(image_processor):
            description.update(
                shortest_edge=self.min_size, max_size=self.max_size, sliding_window=True,
                sliding_window_canvas=list(image_processor.sliding_window_canvas),
                sliding_window_overlap=image_processor.sliding_window_overlap, pooling_size=[1, 1],
                sliding_window_crop_size=getattr(image_processor, "crop_size", image_processor.image_size),
            )
        if self.limit is not None:
            description["limit"] = self.limit
        return description


def resize_shortest_edge(image: Image.Image, short: int, max_size: int) -> Image.Image:
    """detectron2's test-time `ResizeShortestEdge` (`resized_shape`) with PIL bilinear on the RGB image."""
    from .image_processing_ita import resized_shape

    height, width = resized_shape(image.height, image.width, short, max_size)
    image = image.convert("RGB")
    return image if (width, height) == image.size else image.resize((width, height), Image.BILINEAR)


def protocol_image_processor(image_processor, settings: EvaluationSettings):
    """A copy of the model's image processor set up for the protocol."""
    processor = type(image_processor).from_dict(image_processor.to_dict())
    if not has_sliding_window(processor):
        return processor
    if settings.protocol == "original":
        processor.processing_mode, processor.do_sliding_window = "original", True
    else:
        processor.processing_mode, processor.do_sliding_window = "default", False
    return processor


def chunks(items: Sequence[int], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate_benchmark(
    model, processor, source: EvaluationSource, settings: EvaluationSettings, state=None, progress: bool = True,
    checkpoint: dict | None = None,
):
    """Streams one benchmark through the model.

    Args:
        model: an `FGASegModel` (eval mode, on its device, pooling set for the protocol) or an `ITAModel`.
        processor: its processor (tokenizer, image processor); the image processor is set up here and the prompts
            follow the model's templates (`model.encode_vocabulary`).
        source: the split, its label rules and class names (`EvaluationSource`).
        state: an `accelerate.PartialState` (None: one process); each process takes every n-th image.
        checkpoint: ``{"folder", "identity", "every", "resume", "interrupt_after"}`` to save the counts every
            ``every`` images of this process (and at the end) and, with ``resume``, to continue from them.

    Returns:
        `(PairCounts of (label value, prediction) summed over processes, images, seconds)`: seconds spent on
        this benchmark by the main process, over all runs of a resumed evaluation.
    """
    from tqdm.auto import tqdm

    from .data.benchmarks import fold_predictions
    from .evaluation_state import load_state, save_state, state_path
    from .metrics.pair_counts import PairCounts

    spec, dataset = source.spec, source.dataset
    if len(dataset) == 0:
        raise EvaluationError(f"{spec.display_name}: the dataset holds no image")
    device, dtype = model.device, model.dtype
    image_processor = protocol_image_processor(processor.image_processor, settings)
    total = len(dataset) if settings.limit is None else min(settings.limit, len(dataset))
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    indices = list(range(total))[rank::world]
    counts, done, seconds_before, finished = PairCounts(), 0, 0.0, False
    path = None
    if checkpoint is not None:
        path = state_path(Path(checkpoint["folder"]), source.key, rank, world)
        if checkpoint["resume"] and path.is_file():
            counts, done, seconds_before, finished = load_state(path, checkpoint["identity"])
    start = time.perf_counter()

    def save(is_finished: bool) -> None:
        if path is not None:
            seconds = seconds_before + time.perf_counter() - start
            save_state(path, counts, done, seconds, checkpoint["identity"], is_finished)

    rows = _undecoded(dataset)
    if not finished:
        encoded = model.encode_vocabulary(processor.tokenizer, source.prompt_names)
        bar = tqdm(total=total, initial=min(total, done * world), desc=spec.display_name, unit="image",
                   disable=not progress or rank != 0)
        # Predictions that fit uint8 let label PNGs take the counter's fast path.
        largest = spec.num_classes if spec.background_fold_index is not None else len(source.prompt_names)
        small = largest <= 256
        since_save, this_run, last_save = 0, 0, time.monotonic()
        for batch in chunks(indices[done:], settings.batch_size):
            images, labels = [], []
            for index in batch:
                row = rows[index]
                where = f"{spec.display_name}: image {row.get('id', index)}"
                image = _open_image(row["image"], "image", where).convert("RGB")
                label = _label_array(_open_image(row["annotation"], "label map", where), where)
                if label.ndim != 2:
                    raise EvaluationError(f"{where}: the label map has shape {label.shape}; expected (height, width)")
                if (image.height, image.width) != label.shape:
                    raise EvaluationError(
                        f"{where} is {image.width}x{image.height} but its label map is "
                        f"{label.shape[1]}x{label.shape[0]}"
                    )
                if settings.strict:
                    _strict_check(label, spec, where)
                if settings.protocol == "original" and has_sliding_window(image_processor):
                    image = resize_shortest_edge(image, settings.min_size, settings.max_size)
                images.append(image)
                labels.append(label)
            inputs = image_processor(images, return_tensors="pt")
            names = [*image_processor.model_input_names, "pruning_groups"]
            model_inputs = {
                key: inputs[key].to(device, dtype) if inputs[key].is_floating_point() else inputs[key].to(device)
                for key in names if key in inputs
            }
            with torch.no_grad():
                outputs = model(**model_inputs, **encoded)
            predictions = image_processor.post_process_semantic_segmentation(
                outputs, target_sizes=[label.shape for label in labels]
            )
            for prediction, label in zip(predictions, labels):
                prediction = fold_predictions(prediction, spec)
                if small:
                    prediction = prediction.to(torch.uint8)
                counts.update(prediction, label)  # on the prediction's device, the label moved there
            done += len(batch)
            since_save += len(batch)
            this_run += len(batch)
            bar.update(min(len(batch) * world, total - bar.n))
            if checkpoint is not None and checkpoint["every"] and (
                since_save >= checkpoint["every"] or time.monotonic() - last_save >= SAVE_SECONDS
            ):
                save(False)
                since_save, last_save = 0, time.monotonic()
            stop_after = checkpoint.get("interrupt_after") if checkpoint is not None else None
            if stop_after and this_run >= stop_after:
                raise KeyboardInterrupt  # a test's stand-in for Ctrl-C or a killed job
        bar.close()
        save(True)
    seconds = seconds_before + time.perf_counter() - start
    counts.all_reduce()
    return counts, total, seconds


def class_confusion(counts, spec):
    """The benchmark's `ConfusionMatrix` from raw (label value, prediction) counts: values that are no class id
    (void, and ids outside the class list) are ignored."""
    from .data.benchmarks import to_class_ids
    from .metrics import ConfusionMatrix

    references, predictions, pixels = counts.pairs()
    confusion = ConfusionMatrix(spec.num_classes, ignore_index=spec.ignore_index)
    if references.size:
        confusion.counts.add_pairs(to_class_ids(references, spec), predictions, pixels)
    return confusion


def with_published_class_lists(sources: Sequence[EvaluationSource], settings: EvaluationSettings,
                               model_type: str | None) -> list[EvaluationSource]:
    """The sources to score: for an ITA-family model with `settings.class_names` "published", each prepared
    benchmark prompts FC-CLIP's synonym lists (names joined by "," as ITA reads synonyms); others as they are."""
    from dataclasses import replace

    from .data.benchmarks import BENCHMARKS, published_class_synonyms

    if model_type not in PUBLISHED_LIST_MODEL_TYPES or settings.class_names != "published":
        return list(sources)
    return [
        replace(source, prompt_names=[",".join(synonyms) for synonyms in published_class_synonyms(source.key)])
        if BENCHMARKS.get(source.key) is source.spec else source
        for source in sources
    ]


def _identity(location: str, source: EvaluationSource, settings: EvaluationSettings, processor, dtype: str,
              model_type: str | None = None) -> dict:
    import hashlib

    from .evaluation_state import dataset_digest, model_digest

    ids = source.dataset["id"] if "id" in source.dataset.column_names else [str(i) for i in range(len(source.dataset))]
    spec = source.spec
    identity = {
        "model": model_digest(location),
        "benchmark": source.key,
        "images": dataset_digest(list(ids)),
        "protocol": settings.describe(processor.image_processor, model_type),
        "dtype": dtype,
        "class_names": hashlib.sha256(json.dumps([source.prompt_names, source.scored_names]).encode()).hexdigest(),
        "label_rules": [spec.label_mapping, spec.num_classes, spec.ignore_index, spec.disk_ignore_value,
                        spec.background_fold_index],
    }
    if model_type in PUBLISHED_LIST_MODEL_TYPES:  # named first when a resume is refused: "another class lists"
        identity["class_lists"] = settings.class_names
    return identity


def run_evaluation(
    model_location: str | None,
    benchmarks: Sequence[str],
    root: str | Path,
    settings: EvaluationSettings,
    device: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    sources: Sequence[EvaluationSource] = (),
    state_dir: str | Path | None = None,
    resume: bool = False,
    save_every: int = 20,
    interrupt_after: int | None = None,
    warn=None,
) -> dict:
    """Evaluates a model folder or Hub id on benchmarks in their prepared layouts under `root` (and on any further
    `sources`); returns the report (`results`: card entries per benchmark, `details`: the other numbers, and how it
    was run).

    With `state_dir`, each process saves its counts there every `save_every` of its images; `resume` continues
    from them (refused in one line when they belong to another model, benchmark, protocol or process count).
    `warn` receives the warning lines (label ids outside a class list); default: stderr of the main process.
    """
    from accelerate import PartialState

    from .evaluation_report import ABSENT_CLASSES, benchmark_record, label_statistics, outside_ids_line
    from .evaluation_state import check_world_size, saved_states
    from .segment import load_model_and_processor, parse_device, parse_dtype, resolve_model_location

    keys = list(benchmarks)
    if not keys and not sources:
        raise EvaluationError("no benchmark given")
    location = resolve_model_location(model_location)
    # Every folder is checked before any work.
    loaded = [benchmark_source(key, root) for key in keys] + list(sources)
    if len({source.key for source in loaded}) != len(loaded):
        raise EvaluationError("a benchmark is given twice")
    folder = Path(state_dir) if state_dir is not None else None
    if folder is not None:
        saved = saved_states(folder)
        if resume and not saved:
            raise EvaluationError(f"--resume: nothing to resume in {folder} (no saved evaluation state)")
        if not resume and saved:
            raise EvaluationError(
                f"{folder} holds a saved, unfinished evaluation: pass --resume to continue it, or choose another "
                "--state-dir"
            )
        from .evaluation_state import state_path

        names = {state_path(folder, source.key, 0, 1).name.split(".rank")[0]: source.key for source in loaded}
        foreign = sorted({p.name.split(".rank")[0] for p in saved} - set(names))
        if foreign:
            raise EvaluationError(
                f"--resume: the saved evaluation in {folder} is of {', '.join(foreign)}, not of "
                f"{', '.join(names.values())}; resume with the same benchmarks or use another --state-dir"
            )
    state = PartialState(cpu=device == "cpu")
    if folder is not None and resume:
        for source in loaded:
            check_world_size(folder, source.key, state.num_processes)
    torch_device = parse_device(device) if device is not None else state.device
    torch_dtype = parse_dtype(dtype, torch_device)
    if not progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" and the like
    model, processor = load_model_and_processor(location, torch_dtype)
    model.to(torch_device)
    if settings.protocol == "original" and hasattr(model, "set_pooling_size"):  # FGA-Seg: POOLING_SIZES [1, 1]
        model.set_pooling_size((1, 1))
    model_type = getattr(model.config, "model_type", None)
    loaded = with_published_class_lists(loaded, settings, model_type)
    if warn is None:
        def warn(line: str) -> None:
            if state.is_main_process:
                print(line, file=sys.stderr)

    report: dict[str, Any] = {
        "model": location,
        "protocol": settings.describe(processor.image_processor, model_type),
        "miou_definition": MIOU_DEFINITION,
        "absent_classes": ABSENT_CLASSES,
        "device": str(torch_device),
        "dtype": dtype,
        "num_processes": state.num_processes,
        "results": {},
        "details": {},
    }
    for source in loaded:
        checkpoint = None
        if folder is not None:
            identity = _identity(location, source, settings, processor, dtype, model_type)
            checkpoint = {"folder": folder, "identity": identity, "every": save_every, "resume": resume,
                          "interrupt_after": interrupt_after}
        counts, images, seconds = evaluate_benchmark(model, processor, source, settings, state, progress, checkpoint)
        labels = label_statistics(counts, source.spec)
        line = outside_ids_line(source, labels)
        if line:
            warn(line)
        entry, details = benchmark_record(source, class_confusion(counts, source.spec), images, seconds, labels)
        report["results"][source.key] = entry
        report["details"][source.key] = details
    return report


def remove_states(state_dir: str | Path, keys: Sequence[str]) -> None:
    """After a finished evaluation: delete the state files it wrote (only those), then the folder if empty."""
    from .evaluation_state import saved_states

    folder = Path(state_dir)
    for key in keys:
        for path in saved_states(folder, key):
            path.unlink(missing_ok=True)
            for unfinished in folder.glob(f".{path.name}.*.tmp"):  # left by a run killed while saving
                unfinished.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holding files that are not ours


def build_parser() -> argparse.ArgumentParser:
    from .data.benchmarks import BENCHMARKS, EVAL_BENCHMARKS

    parser = argparse.ArgumentParser(prog="fgaseg evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder or Hub id (default: the embedded demo model)")
    parser.add_argument("--benchmarks", default=None,
                        help=f"comma-separated, from {', '.join(BENCHMARKS)} (default: {','.join(EVAL_BENCHMARKS)}, "
                        "or none when --data or --dataset is given)")
    parser.add_argument("--root", default=None,
                        help="folder holding the prepared benchmarks (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--data", action="append", default=[], metavar="FOLDER",
                        help="a folder of images and label maps to score (as `fgaseg synthetic` writes, or images/ + "
                        "annotations/ paired by name), with a class list (--classes or class_names.json); repeat")
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME_OR_PATH",
                        help="a datasets.load_dataset-loadable set (parquet file or folder, Hub id) to score; repeat")
    parser.add_argument("--classes", help="class list of --data/--dataset: a JSON list or id->name object, or a "
                        "text file with one name per line")
    parser.add_argument("--split", default="validation", help="split of --data/--dataset (default: %(default)s)")
    parser.add_argument("--image-column", default="image", help="--dataset's image column (default: %(default)s)")
    parser.add_argument("--label-column", default="annotation",
                        help="--dataset's label-map column (default: %(default)s)")
    parser.add_argument("--ignore-index", type=int, default=255,
                        help="void label value of --data/--dataset (default: %(default)s)")
    parser.add_argument("--reduce-labels", action="store_true",
                        help="--data/--dataset labels use 0 for void and k for class k-1 (as raw ADE20K)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse label ids outside the class list (default: count, report and skip them)")
    parser.add_argument("--output", default="eval.json", help="JSON report (default: %(default)s)")
    parser.add_argument("--markdown", help="Markdown table (default: the JSON path with .md)")
    parser.add_argument("--card", help="also write a model card with these results to this path")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report, table or card an earlier run wrote (files fgaseg did not write are "
                        "never replaced)")
    parser.add_argument("--model-name", help="the card's model name (default: the model folder's name)")
    parser.add_argument("--protocol", default="original", choices=PROTOCOLS, help="(default: %(default)s)")
    parser.add_argument("--class-names", default="published", choices=CLASS_LISTS,
                        help="FC-CLIP and ITA models: prompt the benchmarks with FC-CLIP's published synonym lists, "
                        "as their papers did, or with the plain one-name lists every other model gets (default: "
                        "%(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images of each benchmark")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: accelerate's device for this process)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: %(default)s)")
    parser.add_argument("--state-dir", help="where the counts are saved while evaluating (default: the JSON path "
                        "with .state)")
    parser.add_argument("--save-every", type=int, default=20,
                        help="save the counts every N images of each process, and at least every 5 minutes; 0: "
                        "never (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted evaluation from its saved state (same model, benchmarks, "
                        "protocol and number of processes)")
    parser.add_argument("--interrupt-after", type=int, help=argparse.SUPPRESS)  # tests: stop after N images
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from .segment import SegmentError

    args = build_parser().parse_args(argv)
    if args.device == "cpu":
        from .cpu_memory import keep_freed_memory

        keep_freed_memory()
    root = args.root or os.environ.get("DETECTRON2_DATASETS", "datasets")
    if args.benchmarks is None:
        from .data.benchmarks import EVAL_BENCHMARKS

        args.benchmarks = "" if (args.data or args.dataset) else ",".join(EVAL_BENCHMARKS)
    benchmarks = [key.strip() for key in args.benchmarks.split(",") if key.strip()]
    state_dir = Path(args.state_dir) if args.state_dir else Path(args.output).with_suffix(".state")
    try:
        from .safe_io import OutputFiles

        markdown = Path(args.markdown) if args.markdown else Path(args.output).with_suffix(".md")
        # Checked before evaluating (hours on the full benchmarks), claimed just before writing.
        outputs = OutputFiles([("--output", args.output), ("--markdown", markdown)]
                              + ([("--card", args.card)] if args.card else []), args.overwrite).check()
        if args.save_every < 0:
            raise EvaluationError(f"--save-every must be 0 or more, got {args.save_every}")
        if args.save_every == 0:
            if args.resume:
                raise EvaluationError("--resume continues from saved counts: it cannot go with --save-every 0")
            state_dir = None
        settings = EvaluationSettings(protocol=args.protocol, batch_size=args.batch_size, limit=args.limit,
                                      strict=args.strict, class_names=args.class_names)
        if args.card:
            from transformers import AutoConfig

            from .model_card import FAMILIES
            from .segment import resolve_model_location

            model_type = AutoConfig.from_pretrained(resolve_model_location(args.model)).model_type
            if model_type not in FAMILIES:
                names = [family.title for family in FAMILIES.values()]
                titles = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
                raise EvaluationError(f"--card: model cards are written for {titles} models only, not {model_type!r}")
        sources = [folder_source(path, args.classes, args.split, args.ignore_index, args.reduce_labels)
                   for path in args.data]
        sources += [dataset_source(name, args.classes, args.split, args.image_column, args.label_column,
                                   args.ignore_index, args.reduce_labels) for name in args.dataset]
        report = run_evaluation(args.model, benchmarks, root, settings, device=args.device, dtype=args.dtype,
                                progress=not args.no_progress, sources=sources, state_dir=state_dir,
                                resume=args.resume, save_every=args.save_every,
                                interrupt_after=args.interrupt_after)
    except (EvaluationError, SegmentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if state_dir is None:
            print("interrupted (nothing saved: --save-every 0)", file=sys.stderr)
        else:
            print(f"interrupted: the counts saved in {state_dir} continue with --resume", file=sys.stderr)
        return 130
    from accelerate import PartialState

    from .evaluation_report import write_outputs

    state = PartialState()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        state.wait_for_everyone()  # every process has saved its final state before any is removed
    code = 0
    try:
        if state.is_main_process:
            outputs.claim()
    except ValueError as error:  # a file that appeared at one of those paths while evaluating
        print(f"error: {error}; the counts stay in {state_dir}" if state_dir else f"error: {error}", file=sys.stderr)
        code = 2
    if state.is_main_process and code == 0:
        written = write_outputs(report, args.output, args.markdown, args.card, args.model_name)
        if state_dir is not None:
            remove_states(state_dir, list(report["results"]))
        for key, entry in report["results"].items():
            print(f"{entry['dataset_name']}: mIoU {100 * entry['mIoU']:.2f} ({report['details'][key]['images']} images)")
        print("wrote " + ", ".join(str(p) for p in written))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # An explicit, synchronised teardown: left to interpreter exit, gloo's threads can abort a process
        # ("terminate called without an active exception") while another is still shutting down.
        state.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
