"""`fgaseg benchmark` (also `scripts/benchmark.py`): what a model costs to run, as JSON and a Markdown table.

    fgaseg benchmark --preset vitb_384_fast_cat --output benchmark.json
    fgaseg benchmark --preset tiny --no-isolate        # a smoke run: small vocabularies and images, one repeat

Per model config (an FGA-Seg, CAT-Seg, ITA or FC-CLIP preset with random weights, or "tiny" / "tiny_catseg" /
"tiny_ita" / "tiny_fcclip"; `benchmark_models` builds them) and device it measures, each case after warm-up calls
and as the median of the repeats (CAT-Seg runs FGA-Seg's cases, FC-CLIP ITA's):
- `text`: encoding a vocabulary of T class names (once per vocabulary: pipelines and `fgaseg evaluate` cache it);
- `forward`: one forward pass from given text embeddings, for every batch size and class count, as latency and
  images/s, per dtype (fp32 on CPU; fp32 / bf16 / fp16 autocast, with and without `torch.compile`, on CUDA);
- `image`: one 512x683 image end to end (pre-processing, forward, label map at full size), the figure the
  original's steady-state cost is quoted for (`benchmark_chart.ORIGINAL_IMAGE_SECONDS`: 5.7 s at 171 classes here);
- `sliding_window`: the benchmark protocol (640 px canvas, 4 crops and a global view) for one image (FGA-Seg and
  CAT-Seg);
- `train_step`: forward, backward and AdamW step of a batch of crops with labels (FGA-Seg, CAT-Seg: CLIP policy
  "attention", crops at the CLIP resolution, with and without activation checkpointing; ITA, FC-CLIP: frozen CLIP,
  the recipe's 1024 px crops, labels in a 4 x 4 grid of random classes);
- `metric`: the streaming confusion-matrix mIoU against the standard store-everything algorithm on random maps.

CPU inference cases run with `cpu_memory.keep_freed_memory()`, as `fgaseg segment` and `fgaseg evaluate` do
(`--default-malloc` measures without it). Peak memory is the peak RSS on CPU and `torch.cuda.max_memory_allocated` on
CUDA. By default every case runs in a fresh process; `--no-isolate` runs them in this one, and each case's peak is
still its own on CUDA and on Linux (the kernel's high-water mark is reset per case, `/proc/self/clear_refs`; it
includes what the process already holds, e.g. torch itself); elsewhere it is the process's running maximum
(`peak_memory_scope` says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .benchmark_models import (  # noqa: F401  (the models and their drivers, importable from here as before)
    ITA_TRAIN_CROP,
    ORIGINAL_IMAGE_SIZE,
    PROMPT_TOKENS,
    TINY,
    TINY_CATSEG,
    TINY_FCCLIP,
    TINY_ITA,
    TINY_PRESETS,
    FCCLIPBench,
    FGASegBench,
    ITABench,
    bench_for,
    build_model,
    check_benchmark_preset,
    is_ita,
    model_family,
    pruning_counts,
    random_prompts,
)
from .lazy_imports import LazyModule

# Imported on first use, so that `fgaseg benchmark --help` and argument errors answer without torch.
torch = LazyModule("torch")

DEFAULT_CLASSES = (20, 59, 150, 171, 459, 847)
# Classes kept by the fast decoder's three top-k stages in the original's measurements (those of
# `benchmark_chart.ORIGINAL_IMAGE_SECONDS`), per vocabulary size: with random weights these counts are arbitrary (they follow the init),
# and they decide most of the cost, so a like-for-like comparison fixes them (`--original-pruning`).
ORIGINAL_KEPT_CLASSES = {20: (20, 20, 20), 59: (36, 34, 34), 150: (45, 39, 39), 171: (46, 42, 42), 847: (63, 52, 52)}


# ----------------------------------------------------------------------------------------------- measuring
def reset_peak_memory(device: torch.device) -> str:
    """Start a case's peak-memory count; returns its scope: "case" when the peak can be reset (CUDA; on Linux the
    kernel's resident-set high-water mark, /proc/self/clear_refs), "process" when only the process's running
    maximum exists (then, without isolation, a case's peak includes the earlier cases')."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "case"
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return "case"
    except OSError:
        return "process"


def _resident_high_water_mark() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the allocator's peak; CPU: the peak resident set size since `reset_peak_memory` (Linux), else the
    process's (ru_maxrss)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    high_water = _resident_high_water_mark()
    if high_water is not None:
        return high_water
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def timed(function: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median / min / max wall time of `function` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


# ----------------------------------------------------------------------------------------------- cases
def run_case(case: dict) -> dict:
    """Measures one case (see the module docs) in this process; returns the case with its results."""
    device = torch.device(case["device"])
    scope = reset_peak_memory(device if case["kind"] != "metric" else torch.device("cpu"))
    case = {**case, "peak_memory_scope": scope}
    kind = case["kind"]
    if kind == "metric":
        return {**case, **measure_metric(case)}
    if device.type == "cpu" and kind != "train_step" and case.get("keep_freed_memory", True):
        # What `fgaseg segment` / `fgaseg evaluate` do on CPU (see `cpu_memory`).
        from .cpu_memory import keep_freed_memory

        case = {**case, "keep_freed_memory": keep_freed_memory()}
    model = build_model(case["preset"], device)
    bench = bench_for(case["preset"])
    bench.image_size = tuple(case.get("image_size", ORIGINAL_IMAGE_SIZE))
    generator = torch.Generator().manual_seed(0)
    classes = case["classes"]
    text = {k: v.to(device) for k, v in bench.text_inputs(model, classes, generator).items()}
    warmup, repeats = case["warmup"], case["repeats"]
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():
        embeds = bench.encode(model, text)
    if kind == "text":
        with torch.no_grad():
            result.update(timed(lambda: bench.encode(model, text), device, warmup, repeats))
    elif kind in ("forward", "image", "sliding_window"):
        kept: list[int] = []
        # Compiled cases are left unpatched: the count would be a symbolic size inside the graph.
        counting = pruning_counts(kept, case.get("fixed_kept_classes")) if not case.get("compile") else nullcontext()
        with counting:
            if kind == "forward":
                result.update(measure_forward(model, bench, embeds, case, device, generator))
            else:
                result.update(measure_image(model, bench, embeds, case, device, generator))
        if kept:
            # Random weights: how many classes survive the top-k pruning decides most of FGA-Seg's cost.
            result["kept_classes_per_stage"] = kept[-3:]
    elif kind == "train_step":
        result.update(measure_train_step(model, bench, text, case, device, generator))
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    result["peak_memory_bytes"] = peak_memory_bytes(device)
    return {**case, **result}


def measure_forward(model, bench, embeds, case, device, generator) -> dict:
    if case.get("compile"):
        # The number of classes kept by top-k pruning is data-dependent: captured, it stays one graph.
        torch._dynamo.config.capture_scalar_outputs = True
    forward = torch.compile(model) if case.get("compile") else model
    pixels = {k: v.to(device) for k, v in bench.pixel_inputs(model, case["batch_size"], generator).items()}

    def step():
        with torch.no_grad(), autocast(device, case["dtype"]):
            outputs = forward(**pixels, **embeds)
        if not torch.isfinite(outputs.logits).all():
            raise FloatingPointError(f"non-finite logits in {case}")

    result = timed(step, device, case["warmup"], case["repeats"])
    result["images_per_s"] = case["batch_size"] / result["median_s"]
    return result


def measure_image(model, bench, embeds, case, device, generator) -> dict:
    processor = bench.image_processor(model, case["kind"] == "sliding_window")
    if case.get("sliding_window_canvas"):
        processor.sliding_window_canvas = list(case["sliding_window_canvas"])
    height, width = case.get("image_size", ORIGINAL_IMAGE_SIZE)
    image = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()

    def step():
        inputs = processor(image, return_tensors="pt")
        extra = {k: inputs[k].to(device) for k in ("pruning_groups", "pixel_mask") if inputs.get(k) is not None}
        with torch.no_grad(), autocast(device, case["dtype"]):
            outputs = model(pixel_values=inputs["pixel_values"].to(device), **embeds, **extra)
        return processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]

    return timed(step, device, case["warmup"], case["repeats"])


def measure_train_step(model, bench, text, case, device, generator) -> dict:
    model.train()
    inputs = {k: v.to(device) for k, v in bench.train_inputs(model, case, generator).items()}
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-6)
    if case.get("gradient_checkpointing"):
        model.activation_checkpointing_enable()

    def step():
        with autocast(device, case["dtype"]):
            loss = model(**inputs, **text).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss in {case}")

    result = timed(step, device, case["warmup"], case["repeats"])
    result["trainable_parameters"] = sum(p.numel() for p in parameters)
    return result


from .benchmark_metric import measure_metric, store_everything_miou  # noqa: E402  (the metric cases)


# ----------------------------------------------------------------------------------------------- plan and report
def plan_cases(args) -> list[dict]:
    device = args.device
    cuda = device.startswith("cuda")
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "bfloat16", "float16"] if cuda else ["float32"])
    compiles = [False, True] if (cuda and not args.no_compile) else [False]
    common = {"device": device, "warmup": args.warmup, "repeats": args.repeats}
    sized = {"image_size": list(args.image_size)}
    if args.sliding_window_canvas:
        sized["sliding_window_canvas"] = list(args.sliding_window_canvas)
    if args.default_malloc:
        common["keep_freed_memory"] = False
    if args.metric_only:
        from .benchmark_metric import plan_metric_cases

        return plan_metric_cases(common, args)
    classes = [int(c) for c in args.classes.split(",")]
    cases = []
    for preset in args.preset:
        base = {**common, **sized, "preset": preset}
        family = model_family(preset)  # CAT-Seg runs FGA-Seg's cases, FC-CLIP ITA's
        for count in classes:
            cases.append({**base, "kind": "text", "classes": count, "dtype": "float32"})
            cases.append({**base, "kind": "image", "classes": count, "dtype": "float32"})
            if args.original_pruning and count in ORIGINAL_KEPT_CLASSES and family == "fgaseg":
                cases.append({**base, "kind": "image", "classes": count, "dtype": "float32",
                              "fixed_kept_classes": list(ORIGINAL_KEPT_CLASSES[count])})
            for dtype in dtypes:
                for compiled in compiles:
                    for batch in (int(b) for b in args.batch_sizes.split(",")):
                        cases.append({**base, "kind": "forward", "classes": count, "batch_size": batch,
                                      "dtype": dtype, "compile": compiled})
        ita = family in ("ita", "fcclip")  # no sliding window, and the trainable head is small (no checkpointing)
        for count in (int(c) for c in args.sliding_window_classes.split(",") if c and not ita):
            cases.append({**base, "kind": "sliding_window", "classes": count, "dtype": "float32"})
        if not args.no_training:
            for dtype in (["bfloat16"] if cuda else ["float32"]):
                for checkpointing in ((False,) if ita else (False, True)):
                    cases.append({**base, "kind": "train_step", "classes": args.training_classes,
                                  "batch_size": args.training_batch_size, "dtype": dtype, "warmup": 1,
                                  "repeats": max(1, min(args.repeats, 3)), "gradient_checkpointing": checkpointing})
    if not args.no_metric:
        from .benchmark_metric import plan_metric_cases

        cases += plan_metric_cases(common, args)
    return cases


def run_isolated(case: dict) -> dict:
    """Runs one case in a fresh Python process so that its peak memory is its own."""
    command = [sys.executable, "-m", "fgaseg_hf.benchmark", "--case", json.dumps(case)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {**case, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe_machine(device: str) -> dict:
    import transformers

    machine = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "device": device,
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            machine["memory_gib"] = round(int(handle.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return machine


def summarise(cases: list[dict]) -> dict:
    """The figures the targets are stated in."""
    summary: dict[str, Any] = {}
    images = {(c["preset"], c["classes"]): c["median_s"] for c in cases
              if c["kind"] == "image" and "median_s" in c and not c.get("fixed_kept_classes")}
    for c in cases:
        if c["kind"] == "image" and c["classes"] == 171 and c.get("fixed_kept_classes") and "median_s" in c:
            summary[f"{c['preset']}: seconds per image at 171 classes, pruning as the original's measurement "
                    f"({_stages(c['fixed_kept_classes'])})"] = c["median_s"]
    for preset in sorted({p for p, _ in images}):
        if (preset, 150) in images and (preset, 847) in images:
            summary[f"{preset}: image time 847 / 150 classes"] = images[(preset, 847)] / images[(preset, 150)]
        if (preset, 171) in images:
            summary[f"{preset}: seconds per image at 171 classes"] = images[(preset, 171)]
    from .benchmark_metric import summarise_metric

    summary.update(summarise_metric(cases))
    return summary


def _stages(counts) -> str:
    return "/".join(str(c) for c in counts)


def _kept(case: dict) -> str:
    if case.get("fixed_kept_classes"):
        return f"{_stages(case['fixed_kept_classes'])} (fixed)"
    return _stages(case["kept_classes_per_stage"]) if case.get("kept_classes_per_stage") else "-"


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def render_markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        "# fgaseg_hf benchmark", "",
        f"{machine.get('processor')}, {machine['cpu_count']} CPUs ({machine['torch_threads']} torch threads), "
        f"{machine.get('memory_gib', '?')} GiB; {machine.get('gpu', 'no GPU')}; torch {machine['torch']}, "
        f"transformers {machine['transformers']}. Medians; memory = peak "
        f"{'allocated CUDA memory' if machine['device'].startswith('cuda') else 'process RSS'}.", "",
        "| config | case | classes | kept per top-k stage | batch | dtype | compile / checkpointing | median s | images/s "
        "| peak GiB |",
        "|---|---|---:|---|---:|---|---|---:|---:|---:|",
    ]
    if all(c["kind"] == "metric" for c in report["cases"]):  # --metric-only: no model table
        del lines[-2:]
    for c in report["cases"]:
        if c["kind"] == "metric":
            continue
        seconds = f"{c['median_s']:.4f}" if "median_s" in c else f"error: {c.get('error')}"
        rate = f"{c['images_per_s']:.2f}" if "images_per_s" in c else "-"
        lines.append(
            f"| {c['preset']} | {c['kind']} | {c['classes']} | {_kept(c)} | {c.get('batch_size', 1)} | {c['dtype']} | "
            f"{'yes' if c.get('compile') or c.get('gradient_checkpointing') else 'no'} | {seconds} | {rate} | "
            f"{_gib(c.get('peak_memory_bytes'))} |"
        )
    from .benchmark_metric import render_metric_markdown

    lines += render_metric_markdown(report["cases"])
    if report["summary"]:
        lines += ["", "| summary | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report["summary"].items()]
    return "\n".join(lines) + "\n"


# Defaults of the options that decide a run's size. The tiny presets alone make a smoke run (small vocabularies,
# image and canvas, one repeat: well under a minute and 2 GB on a 2-core CPU); anything given on the command line
# wins.
FULL_DEFAULTS = {
    "classes": ",".join(map(str, DEFAULT_CLASSES)), "batch_sizes": "1,2,4,8", "sliding_window_classes": "171,847",
    "training_classes": 171, "metric_images": 100, "image_size": "512,683", "sliding_window_canvas": None,
    "repeats": 3, "warmup": 1,
}
SMOKE_DEFAULTS = {
    "classes": "3,5", "batch_sizes": "1,2", "sliding_window_classes": "5", "training_classes": 5, "metric_images": 4,
    "image_size": "96,128", "sliding_window_canvas": "96,96", "repeats": 1, "warmup": 0,
}


def _pair(text: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (two integers), got {text!r}") from None
    if first < 1 or second < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return first, second


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help='model preset(s) with random weights (FGA-Seg, CAT-Seg, '
                        'ITA or FC-CLIP), or "tiny" / "tiny_catseg" / "tiny_ita" / "tiny_fcclip" (repeat; default: '
                        'vitb_384_fast_cat)')
    parser.add_argument("--classes", help="comma-separated vocabulary sizes T (default: "
                        f"{FULL_DEFAULTS['classes']}; {SMOKE_DEFAULTS['classes']} for the tiny presets)")
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes of the forward cases (default: "
                        f"{FULL_DEFAULTS['batch_sizes']}; {SMOKE_DEFAULTS['batch_sizes']} for the tiny presets)")
    parser.add_argument("--dtypes", help="comma-separated (default: float32 on CPU; float32,bfloat16,float16 on CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases on CUDA")
    parser.add_argument("--sliding-window-classes",
                        help="comma-separated class counts of the sliding-window case (default: "
                        f"{FULL_DEFAULTS['sliding_window_classes']}; {SMOKE_DEFAULTS['sliding_window_classes']} for "
                        "the tiny presets)")
    parser.add_argument("--training-classes", type=int, help="classes in the training step's labels (default: "
                        f"{FULL_DEFAULTS['training_classes']}; {SMOKE_DEFAULTS['training_classes']} for the tiny presets)")
    parser.add_argument("--training-batch-size", type=int, default=None, help="(default: 1 on CPU, 4 on CUDA)")
    parser.add_argument("--original-pruning", action="store_true",
                        help="add image cases whose top-k stages keep as many classes as in the original's measurement "
                        f"(vocabularies {', '.join(map(str, ORIGINAL_KEPT_CLASSES))}): random weights make the kept count "
                        "arbitrary, so this is the like-for-like comparison with its timings")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step cases")
    parser.add_argument("--no-metric", action="store_true", help="skip the streaming-mIoU metric cases")
    parser.add_argument("--metric-only", action="store_true", help="run the metric cases only")
    parser.add_argument("--metric-peer", metavar="PATH",
                        help="an evaluate module to time beside the streaming mIoU on the same maps, e.g. a local copy "
                        "of evaluate's own mean_iou (default: none)")
    parser.add_argument("--metric-images", type=int, help="random 512x512 label maps of the metric cases (default: "
                        f"{FULL_DEFAULTS['metric_images']}; {SMOKE_DEFAULTS['metric_images']} for the tiny presets)")
    parser.add_argument("--image-size", type=_pair, metavar="HEIGHT,WIDTH",
                        help="the test image of the image and sliding-window cases (default: "
                        f"{FULL_DEFAULTS['image_size']}, the original's measurements; {SMOKE_DEFAULTS['image_size']} "
                        "for the tiny presets)")
    parser.add_argument("--sliding-window-canvas", type=_pair, metavar="HEIGHT,WIDTH",
                        help="canvas of the sliding-window case (default: the image processor's, 640,640; "
                        f"{SMOKE_DEFAULTS['sliding_window_canvas']} for the tiny presets)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--warmup", type=int, help="untimed calls before each case's repeats (default: "
                        f"{FULL_DEFAULTS['warmup']}; {SMOKE_DEFAULTS['warmup']} for the tiny presets)")
    parser.add_argument("--repeats", type=int, help="timed calls per case; the median is reported (default: "
                        f"{FULL_DEFAULTS['repeats']}; {SMOKE_DEFAULTS['repeats']} for the tiny presets)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run every case in this process (faster; on Linux and CUDA each case's peak memory is "
                        "still its own, elsewhere the process's running maximum)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="CPU inference with glibc's default allocation policy (not fgaseg_hf.cpu_memory's)")
    parser.add_argument("--output", default="benchmark.json", help="JSON report (default: %(default)s)")
    parser.add_argument("--markdown", help="Markdown table (default: the JSON path with .md)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report, table and chart an earlier run wrote (files fgaseg did not write "
                        "are never replaced)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, for the isolated child processes
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with its device-dependent defaults filled in."""
    args = build_parser().parse_args(argv)
    args.preset = args.preset or ["vitb_384_fast_cat"]
    defaults = SMOKE_DEFAULTS if all(p in TINY_PRESETS for p in args.preset) else FULL_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, _pair(value) if name in ("image_size", "sliding_window_canvas") and value else value)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.training_batch_size is None:
        args.training_batch_size = 4 if args.device.startswith("cuda") else 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    for preset in args.preset or []:
        try:
            check_benchmark_preset(preset)
        except (ValueError, OSError) as error:
            print(f"error: --preset {preset}: {error}", file=sys.stderr)
            return 2
    from .safe_io import OutputFiles, OutputFolderError

    output = Path(args.output)
    markdown = Path(args.markdown) if args.markdown else output.with_suffix(".md")
    chart = output.with_suffix(".png")
    files = OutputFiles([("--output", output), ("--markdown", markdown), ("--output", chart)], args.overwrite)
    try:
        files.check()  # before hours of measuring, not after
    except OutputFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cases = plan_cases(args)
    results = []
    for case in tqdm(cases, desc="benchmark", unit="case"):
        results.append(run_case(case) if args.no_isolate else run_isolated(case))
    report = {"machine": describe_machine(args.device), "cases": results, "summary": summarise(results)}
    files.claim()
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    from .benchmark_chart import plot_image_times

    drawn = plot_image_times(results, chart, title=f"seconds per image ({report['machine']['device']})")
    print(f"wrote {output}, {markdown}" + (f" and {chart}" if drawn else ""))
    failed = [c for c in results if "error" in c]
    for case in failed:
        print(f"failed: {case['kind']} {case.get('classes')} classes: {case['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
