"""`fgaseg benchmark` (also `scripts/benchmark.py`): what a model costs to run, as JSON and a Markdown table.

    fgaseg benchmark --preset vitb_384_fast_cat --output benchmark.json
    fgaseg benchmark --preset tiny --classes 3,5 --batch-sizes 1,2 --repeats 1 --no-isolate   # a one-second smoke run

Per model config (an FGA-Seg or ITA preset with random weights, or "tiny" / "tiny_ita") and device it measures, each
case after warm-up calls and as the median of the repeats:
- `text`: encoding a vocabulary of T class names (once per vocabulary: pipelines and `fgaseg evaluate` cache it);
- `forward`: one forward pass from given text embeddings, for every batch size and class count, as latency and
  images/s, per dtype (fp32 on CPU; fp32 / bf16 / fp16 autocast, with and without `torch.compile`, on CUDA);
- `image`: one 512x683 image end to end (pre-processing, forward, label map at full size), the figure the
  original's steady-state cost is quoted for (`../shared/docs/original-speed.md`: 5.7 s at 171 classes here);
- `sliding_window`: the benchmark protocol (640 px canvas, 4 crops and a global view) for one image (FGA-Seg);
- `train_step`: forward, backward and AdamW step of a batch of crops with labels (FGA-Seg: CLIP policy
  "attention", crops at the CLIP resolution, with and without activation checkpointing; ITA: frozen CLIP, the
  recipe's 1024 px crops, labels in a 4 x 4 grid of random classes);
- `metric`: the streaming confusion-matrix mIoU against the standard store-everything algorithm on random maps.

CPU inference cases run with `cpu_memory.keep_freed_memory()`, as `fgaseg segment` and `fgaseg evaluate` do
(`--default-malloc` measures without it). Peak memory is the process's peak RSS on CPU (so, by default, every case
runs in a fresh process: `--no-isolate` runs them in this one, and then the peaks only grow) and
`torch.cuda.max_memory_allocated` on CUDA.
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
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_CLASSES = (20, 59, 150, 171, 459, 847)
ORIGINAL_IMAGE_SIZE = (512, 683)  # (height, width), the image of the original's measurements
PROMPT_TOKENS = 12  # a typical tokenised prompt: "a photo of a <name> in the scene" plus start/end
TINY = {
    "image_size": 64, "hidden_dim": 32, "decoder_dims": [16, 16], "decoder_guidance_dims": [16, 16],
    "decoder_guidance_proj_dims": [8, 8], "text_guidance_proj_dim": 16, "appearance_guidance_proj_dim": 16,
    "window_size": 4, "p2t_num_heads": 4, "num_attention_heads": 2, "guidance_layer_indexes": [1, 2],
    "clip_config": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "max_position_embeddings": 16},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                          "image_size": 64, "patch_size": 8},
    },
}


TINY_ITA = {
    "vision_config": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layer_norm_eps": 1e-6},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "projection_dim": 32, "max_position_embeddings": 16, "hidden_act": "gelu"},
    "clip_image_size": 32, "feature_size": 32, "mask_feature_size": 32, "encoder_layers": 1,
    "encoder_feedforward_dim": 64, "num_attention_heads": 2, "hidden_dim": 32, "dim_feedforward": 64,
    "decoder_layers": 3, "num_learned_queries": 4, "num_text_queries": 4, "prompt_templates": ["a {}", "the {}"],
    "train_num_points": 64, "min_size_test": 64, "max_size_test": 96,
}
ITA_TRAIN_CROP = 1024  # FC-CLIP's large-scale-jitter crop
# Classes kept by the fast decoder's three top-k stages in the original's measurements (../shared/docs/
# original-speed.md), per vocabulary size: with random weights these counts are arbitrary (they follow the init),
# and they decide most of the cost, so a like-for-like comparison fixes them (`--original-pruning`).
ORIGINAL_KEPT_CLASSES = {20: (20, 20, 20), 59: (36, 34, 34), 150: (45, 39, 39), 171: (46, 42, 42), 847: (63, 52, 52)}


# ----------------------------------------------------------------------------------------------- measuring
def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
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


def is_ita(preset: str) -> bool:
    from .configuration_ita import available_ita_presets

    return preset == "tiny_ita" or preset in available_ita_presets()


def build_model(preset: str, device: torch.device):
    """The preset's model with random weights (seeded): FGA-Seg, or ITA for ITA presets and "tiny_ita"."""
    torch.manual_seed(0)
    if is_ita(preset):
        from .configuration_ita import ITAConfig
        from .modeling_ita import ITAModel

        config = ITAConfig(**json.loads(json.dumps(TINY_ITA))) if preset == "tiny_ita" else ITAConfig.from_preset(preset)
        return ITAModel(config).to(device).eval()
    from .configuration_fgaseg import FGASegConfig, preset_values
    from .modeling_fgaseg import FGASegModel

    values = json.loads(json.dumps(TINY)) if preset == "tiny" else preset_values(preset)
    return FGASegModel(FGASegConfig(**values)).to(device).eval()


def random_prompts(model, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """`(T, templates, PROMPT_TOKENS)` token ids: start, random words, end (real prompts are about this long)."""
    text = model.config.clip_config.text_config
    templates = model.config.num_templates
    length = min(PROMPT_TOKENS, text.max_position_embeddings)
    ids = torch.randint(0, text.vocab_size - 2, (num_classes, templates, length), generator=generator)
    ids[..., 0] = text.bos_token_id
    ids[..., -1] = text.eos_token_id
    return ids


class FGASegBench:
    """How the benchmark drives FGA-Seg: prompts `(T, templates, tokens)`, square CLIP-resolution inputs."""

    def text_inputs(self, model, classes: int, generator) -> dict:
        return {"input_ids": random_prompts(model, classes, generator)}

    def encode(self, model, text: dict) -> dict:
        return {"text_embeds": model.get_text_embeddings(text["input_ids"])}

    def pixel_inputs(self, model, batch: int, generator) -> dict:
        size = model.config.clip_resolution
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}

    def image_processor(self, model, sliding: bool):
        from .image_processing_fgaseg import FGASegImageProcessor

        return FGASegImageProcessor.from_model_config(model.config, do_sliding_window=sliding)

    def train_inputs(self, model, case: dict, generator) -> dict:
        model.apply_finetune_policy(case.get("policy", "attention"))
        size, batch = model.config.clip_resolution, case["batch_size"]
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator),
                "labels": torch.randint(0, case["classes"], (batch, size, size), generator=generator)}


class ITABench:
    """How the benchmark drives ITA: every class in every template (plus the bare-name dominant vocabulary), images
    at the test-time size of the 512x683 image, training on the recipe's 1024 px crops with block-shaped labels."""

    def text_inputs(self, model, classes: int, generator) -> dict:
        text = model.config.text_config
        templates = len(model.config.prompt_templates)
        length = min(PROMPT_TOKENS, text.max_position_embeddings)

        def rows(count):
            ids = torch.zeros(count, text.max_position_embeddings, dtype=torch.long)  # open_clip pads with 0
            ids[:, :length] = torch.randint(1, text.vocab_size - 2, (count, length), generator=generator)
            ids[:, 0], ids[:, length - 1] = text.bos_token_id, text.eos_token_id
            mask = torch.zeros_like(ids)
            mask[:, :length] = 1
            return ids, mask

        input_ids, attention_mask = rows(classes * templates)
        dominant_ids, dominant_mask = rows(classes + 1)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "dominant_input_ids": dominant_ids,
                "dominant_attention_mask": dominant_mask, "synonym_to_class": torch.arange(classes)}

    def encode(self, model, text: dict) -> dict:
        model.clip._text_cache.clear()  # time the text tower, not the cache
        classifier, synonym_to_class = model.text_classifier(
            text["input_ids"], text["attention_mask"], text["synonym_to_class"]
        )
        vocabulary = model.dominant_vocabulary(text["dominant_input_ids"], text["dominant_attention_mask"])
        return {"text_embeds": classifier[:-1], "synonym_to_class": synonym_to_class, "dominant_text_embeds": vocabulary}

    def pixel_inputs(self, model, batch: int, generator) -> dict:
        processor = self.image_processor(model, sliding=False)
        height, width = processor.resized_size(*ORIGINAL_IMAGE_SIZE)
        canvas = processor.canvas_size([(height, width)])
        pixel_mask = torch.zeros(batch, *canvas, dtype=torch.long)
        pixel_mask[:, :height, :width] = 1
        return {"pixel_values": torch.randn(batch, 3, *canvas, generator=generator) * pixel_mask[:, None],
                "pixel_mask": pixel_mask}

    def image_processor(self, model, sliding: bool):
        from .image_processing_ita import ITAImageProcessor

        if sliding:
            raise ValueError("ITA has no sliding-window inference")
        return ITAImageProcessor.from_model_config(model.config)

    def train_inputs(self, model, case: dict, generator) -> dict:
        size, batch = ITA_TRAIN_CROP if case["preset"] != "tiny_ita" else 64, case["batch_size"]
        # A 4 x 4 grid of random classes: about as many segments (masks to match) as a real scene.
        blocks = torch.randint(0, case["classes"], (batch, 1, 4, 4), generator=generator).float()
        labels = torch.nn.functional.interpolate(blocks, size=(size, size), mode="nearest")[:, 0].long()
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator), "labels": labels}


@contextmanager
def pruning_counts(record: list[int], fixed: Sequence[int] | None = None):
    """Appends to `record` how many classes each top-k pruning stage keeps (the largest count over the images).

    With `fixed`, stage i keeps exactly `fixed[i]` classes instead (the ones whose best auxiliary logit is highest):
    the work of a model whose pruning kept that many, whatever these random weights would keep. Outputs then differ
    from the model's; only the timings are meaningful."""
    from .fgaseg_decoder import ClassSelection

    original = ClassSelection.prune

    def prune(self, aux_logits, top_k, groups):
        if fixed is None:
            selection, keep = original(self, aux_logits, top_k, groups)
        else:
            scores = aux_logits.detach().amax(dim=(2, 3))
            if self.mask is not None:
                scores = scores.masked_fill(~self.mask, float("-inf"))
            count = min(fixed[len(record) % len(fixed)], scores.shape[1])
            keep = scores.topk(count, dim=1).indices.sort(dim=1).values
            selection = ClassSelection(self.ids.gather(1, keep), torch.ones_like(keep, dtype=torch.bool))
        record.append(int(keep.shape[1]))
        return selection, keep

    ClassSelection.prune = prune
    try:
        yield record
    finally:
        ClassSelection.prune = original


def bench_for(preset: str):
    return ITABench() if is_ita(preset) else FGASegBench()


def autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


# ----------------------------------------------------------------------------------------------- cases
def run_case(case: dict) -> dict:
    """Measures one case (see the module docs) in this process; returns the case with its results."""
    device = torch.device(case["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    kind = case["kind"]
    if kind == "metric":
        return {**case, **measure_metric(case)}
    if device.type == "cpu" and kind != "train_step" and case.get("keep_freed_memory", True):
        # What `fgaseg segment` / `fgaseg evaluate` do on CPU (see `cpu_memory`).
        from .cpu_memory import keep_freed_memory

        case = {**case, "keep_freed_memory": keep_freed_memory()}
    model = build_model(case["preset"], device)
    bench = bench_for(case["preset"])
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
    height, width = ORIGINAL_IMAGE_SIZE
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


def store_everything_miou(predictions, references, num_labels: int, ignore_index: int) -> float:
    """The standard metric's algorithm: every map kept until the end, then per-image histograms."""
    intersect = np.zeros(num_labels)
    union = np.zeros(num_labels)
    for prediction, reference in zip(predictions, references):
        keep = reference != ignore_index
        prediction, reference = prediction[keep], reference[keep]
        hit = prediction[prediction == reference]
        area_intersect = np.histogram(hit, bins=num_labels, range=(0, num_labels - 1))[0]
        area_prediction = np.histogram(prediction, bins=num_labels, range=(0, num_labels - 1))[0]
        area_reference = np.histogram(reference, bins=num_labels, range=(0, num_labels - 1))[0]
        intersect += area_intersect
        union += area_prediction + area_reference - area_intersect
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union))


def measure_metric(case: dict) -> dict:
    """Streaming vs store-everything mIoU on `images` random 512 x 512 maps with `classes` labels."""
    from .metrics import ConfusionMatrix

    rng = np.random.default_rng(0)
    count, classes = case["images"], case["classes"]

    def maps():
        for _ in range(count):
            reference = rng.integers(0, classes, (512, 512))
            reference[:8] = 255
            yield rng.integers(0, classes, (512, 512)), reference

    start = time.perf_counter()
    if case["method"] == "streaming":
        confusion = ConfusionMatrix(classes, ignore_index=255)
        for prediction, reference in maps():
            confusion.update(torch.from_numpy(prediction), torch.from_numpy(reference))
        miou = float(confusion.compute()["mean_iou"])
    else:
        stored = list(maps())
        miou = store_everything_miou([p for p, _ in stored], [r for _, r in stored], classes, 255)
    return {"seconds": time.perf_counter() - start, "mean_iou": miou,
            "peak_memory_bytes": peak_memory_bytes(torch.device("cpu"))}


# ----------------------------------------------------------------------------------------------- plan and report
def plan_cases(args) -> list[dict]:
    device = args.device
    cuda = device.startswith("cuda")
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32", "bfloat16", "float16"] if cuda else ["float32"])
    compiles = [False, True] if (cuda and not args.no_compile) else [False]
    common = {"device": device, "warmup": args.warmup, "repeats": args.repeats}
    if args.default_malloc:
        common["keep_freed_memory"] = False
    classes = [int(c) for c in args.classes.split(",")]
    cases = []
    for preset in args.preset:
        base = {**common, "preset": preset}
        for count in classes:
            cases.append({**base, "kind": "text", "classes": count, "dtype": "float32"})
            cases.append({**base, "kind": "image", "classes": count, "dtype": "float32"})
            if args.original_pruning and count in ORIGINAL_KEPT_CLASSES and not is_ita(preset):
                cases.append({**base, "kind": "image", "classes": count, "dtype": "float32",
                              "fixed_kept_classes": list(ORIGINAL_KEPT_CLASSES[count])})
            for dtype in dtypes:
                for compiled in compiles:
                    for batch in (int(b) for b in args.batch_sizes.split(",")):
                        cases.append({**base, "kind": "forward", "classes": count, "batch_size": batch,
                                      "dtype": dtype, "compile": compiled})
        ita = is_ita(preset)  # ITA: no sliding window, and its trainable head is small (no checkpointing)
        for count in (int(c) for c in args.sliding_window_classes.split(",") if c and not ita):
            cases.append({**base, "kind": "sliding_window", "classes": count, "dtype": "float32"})
        if not args.no_training:
            for dtype in (["bfloat16"] if cuda else ["float32"]):
                for checkpointing in ((False,) if ita else (False, True)):
                    cases.append({**base, "kind": "train_step", "classes": args.training_classes,
                                  "batch_size": args.training_batch_size, "dtype": dtype, "warmup": 1,
                                  "repeats": max(1, min(args.repeats, 3)), "gradient_checkpointing": checkpointing})
    if not args.no_metric:
        for method in ("streaming", "store_everything"):
            cases.append({**common, "kind": "metric", "method": method, "images": args.metric_images, "classes": 150,
                          "device": "cpu"})
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
    metric = {c["method"]: c for c in cases if c["kind"] == "metric" and "seconds" in c}
    if len(metric) == 2:
        summary["metric: streaming / store-everything time"] = metric["streaming"]["seconds"] / metric["store_everything"]["seconds"]
        summary["metric: same mIoU"] = abs(metric["streaming"]["mean_iou"] - metric["store_everything"]["mean_iou"]) < 1e-9
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
    metric = [c for c in report["cases"] if c["kind"] == "metric" and "seconds" in c]
    if metric:
        lines += ["", "| mIoU algorithm | images | classes | seconds | peak GiB | mIoU |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['method']} | {c['images']} | {c['classes']} | {c['seconds']:.3f} | "
                  f"{_gib(c['peak_memory_bytes'])} | {c['mean_iou']:.6f} |" for c in metric]
    if report["summary"]:
        lines += ["", "| summary | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report["summary"].items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgaseg benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help='model preset(s) with random weights (FGA-Seg or ITA), or '
                        '"tiny" / "tiny_ita" (repeat; default: vitb_384_fast_cat)')
    parser.add_argument("--classes", default=",".join(map(str, DEFAULT_CLASSES)), help="(default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="(default: %(default)s)")
    parser.add_argument("--dtypes", help="comma-separated (default: float32 on CPU; float32,bfloat16,float16 on CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases on CUDA")
    parser.add_argument("--sliding-window-classes", default="171,847",
                        help="class counts of the sliding-window case (default: %(default)s)")
    parser.add_argument("--training-classes", type=int, default=171)
    parser.add_argument("--training-batch-size", type=int, default=None, help="(default: 1 on CPU, 4 on CUDA)")
    parser.add_argument("--original-pruning", action="store_true",
                        help="add image cases whose top-k stages keep as many classes as in the original's measurement "
                        f"(vocabularies {', '.join(map(str, ORIGINAL_KEPT_CLASSES))}): random weights make the kept count "
                        "arbitrary, so this is the like-for-like comparison with its timings")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--no-metric", action="store_true")
    parser.add_argument("--metric-images", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-isolate", action="store_true", help="run every case in this process")
    parser.add_argument("--default-malloc", action="store_true",
                        help="CPU inference with glibc's default allocation policy (not fgaseg_hf.cpu_memory's)")
    parser.add_argument("--output", default="benchmark.json", help="JSON report (default: %(default)s)")
    parser.add_argument("--markdown", help="Markdown table (default: the JSON path with .md)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, for the isolated child processes
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with its device-dependent defaults filled in."""
    args = build_parser().parse_args(argv)
    args.preset = args.preset or ["vitb_384_fast_cat"]
    if args.training_batch_size is None:
        args.training_batch_size = 4 if args.device.startswith("cuda") else 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    cases = plan_cases(args)
    results = []
    for case in tqdm(cases, desc="benchmark", unit="case"):
        results.append(run_case(case) if args.no_isolate else run_isolated(case))
    report = {"machine": describe_machine(args.device), "cases": results, "summary": summarise(results)}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = Path(args.markdown) if args.markdown else output.with_suffix(".md")
    markdown.write_text(render_markdown(report), encoding="utf-8")
    from .benchmark_chart import plot_image_times

    chart = output.with_suffix(".png")
    drawn = plot_image_times(results, chart, title=f"seconds per image ({report['machine']['device']})")
    print(f"wrote {output}, {markdown}" + (f" and {chart}" if drawn else ""))
    failed = [c for c in results if "error" in c]
    for case in failed:
        print(f"failed: {case['kind']} {case.get('classes')} classes: {case['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
