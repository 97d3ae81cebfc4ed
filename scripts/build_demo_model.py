#!/usr/bin/env python
"""Package the demo model: evaluate a trained run on a freshly generated validation split (a generator seed the
run never saw), and write the folder that ships in `fgaseg_hf/demo_model` with a model card and its training curve.

    fgaseg synthetic --output outputs/synthetic_scenes --train 4000 --validation 300
    fgaseg train --config configs/train/synthetic_demo.yaml
    python scripts/build_demo_model.py --run outputs/demo_run --output src/fgaseg_hf/demo_model

After a change to the package's model code, refresh the folder's code files and metadata (not its weights):

    python scripts/build_demo_model.py --sync        # = python -m fgaseg_hf.demo_model_files --sync
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fgaseg_hf import FGASegModel, FGASegProcessor
from fgaseg_hf.data.synthetic import load_synthetic_dataset, write_synthetic_dataset
from fgaseg_hf.demo_model_files import sync
from fgaseg_hf.metrics.mean_iou import ConfusionMatrix
from fgaseg_hf.training_report import plot_training_curve

KEEP = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json")


# Scenes are 128 px and the model sees 96 px: by default the shipped processor runs the sliding window (four 96 px
# crops of the 128 px canvas, at the scale the model was trained at, plus the whole scene), which resolves trees
# and buildings better than the whole scene squeezed to 96 px.
SLIDING_WINDOW = {"do_sliding_window": True, "sliding_window_canvas": [128, 128]}


def evaluate_fresh(folder: Path, seed: int, count: int, batch_size: int = 32, sliding_window: bool | None = None) -> dict:
    """mIoU at full resolution on `count` new validation scenes of generator seed `seed` (`sliding_window`: None =
    the saved processor's default)."""
    model, processor = FGASegModel.from_pretrained(folder).eval(), FGASegProcessor.from_pretrained(folder)
    if sliding_window is not None:
        processor.image_processor.do_sliding_window = sliding_window
    with tempfile.TemporaryDirectory() as scratch:
        write_synthetic_dataset(scratch, num_train=0, num_validation=count, seed=seed, progress=False)
        dataset, names = load_synthetic_dataset(scratch)
        validation = dataset["validation"]
        confusion = ConfusionMatrix(len(names), ignore_index=255)
        for start in tqdm(range(0, len(validation), batch_size), desc="fresh validation"):
            batch = validation[start : start + batch_size]
            with torch.no_grad():
                outputs = model(**processor(images=batch["image"]))
            sizes = [(image.height, image.width) for image in batch["image"]]
            predictions = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            confusion.update(predictions, [torch.as_tensor(np.array(a)) for a in batch["annotation"]])
    result = confusion.compute()
    return {
        "mean_iou": float(result["mean_iou"]),
        "overall_accuracy": float(result["overall_accuracy"]),
        "per_category_iou": {n: float(v) for n, v in zip(names, result["per_category_iou"])},
        "scenes": count,
        "generator_seed": seed,
    }


def write_example(path: Path, seed: int, index: int, size: int) -> None:
    """A scene outside the evaluation set (same seed, next index) and its true label map, for the README."""
    from PIL import Image

    from fgaseg_hf.data.synthetic import generate_scene, scene_rng

    image, labels = generate_scene(scene_rng(seed, "validation", index), (size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    Image.fromarray(labels).save(path.with_name(path.stem + "_labels.png"))


CARD = """---
license: apache-2.0
library_name: transformers
pipeline_tag: image-segmentation
tags: [fgaseg, semantic-segmentation, synthetic-data, demo]
---

# fgaseg_hf demo model: a tiny FGA-Seg trained on synthetic scenes

What it is: an FGA-Seg model ({params:.2f} M parameters, CLIP included) whose tiny CLIP towers (vision: {vision};
text: character tokens, {text}) were trained **from scratch**, together with the FGA-Seg head, on procedural
outdoor scenes (`fgaseg_hf.data.synthetic`) on a 2-core CPU in {minutes:.0f} minutes. It knows seven classes:
{classes}. It is a **closed-vocabulary demo**: other class names tokenise, but the text tower never learnt what
they mean, and real photographs are far from its training data. It exists so that `fgaseg segment` and the
pipelines run out of the box; for real use start from CLIP weights (below).

## Results

mIoU on {scenes} freshly generated validation scenes (128 px, generator seed {seed}, never seen in training):
**{miou:.3f}** (pixel accuracy {accuracy:.3f}) with the processor's default sliding window (four 96 px crops of the
128 px scene plus the whole scene, the original's sliding-window inference on a 128 px canvas); {whole:.3f} with the
whole scene resized to 96 px (`do_sliding_window=False`).

| class | IoU |
|---|---|
{rows}

![training curve](training_curve.png)

## Use

```bash
fgaseg segment photo.png                       # this model is the default; labels default to its 7 classes
```

```python
import fgaseg_hf
from transformers import pipeline

# This folder is fgaseg_hf.DEMO_MODEL; it carries its code (trust_remote_code), so fgaseg_hf is needed only for the path.
segmenter = pipeline(model=fgaseg_hf.DEMO_MODEL, trust_remote_code=True)      # open-vocabulary-segmentation
segmenter("examples/synthetic_scene.png", candidate_labels=["sky", "water", "tree"])
pipeline("image-segmentation", model=fgaseg_hf.DEMO_MODEL, trust_remote_code=True)("examples/synthetic_scene.png")  # all seven classes
```

## Training

`fgaseg synthetic` (by default 4000 training and 300 validation scenes in `outputs/synthetic_scenes`), then
`fgaseg train --config configs/train/synthetic_demo.yaml` ({steps} steps of batch 8: AdamW, cosine schedule, the
original's loss and augmentation), then `python scripts/build_demo_model.py`. Real CLIP instead:
`FGASegModel.from_clip_pretrained("openai/clip-vit-base-patch16", preset="vitb_384_fast_cat")` and a run config
with `model.clip_pretrained`.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", default=["outputs/demo_run"],
                        help="the training runs' output folders, in order (a later stage continues an earlier one)")
    parser.add_argument("--output", default="src/fgaseg_hf/demo_model", help="folder to write")
    parser.add_argument("--fresh-seed", type=int, default=1, help="generator seed of the fresh validation split")
    parser.add_argument("--fresh-count", type=int, default=300)
    parser.add_argument("--example", default="examples/synthetic_scene.png",
                        help="where to write an example scene (and its true labels beside it, *_labels.png)")
    parser.add_argument("--example-size", type=int, default=256)
    parser.add_argument("--sync", action="store_true",
                        help="only rewrite the code files and metadata of --output from the installed package")
    args = parser.parse_args(argv)
    if args.sync:
        changed = sync(args.output)
        print(f"rewrote {len(changed)} file(s) in {args.output}" + (f": {', '.join(changed)}" if changed else ""))
        return 0
    runs, output = [Path(r) for r in args.run], Path(args.output)
    history, offset, runtime = {"log_history": []}, 0, 0.0
    for stage in runs:
        entries = json.loads((stage / "training_history.json").read_text())["log_history"]
        history["log_history"] += [{**e, "step": e["step"] + offset} for e in entries if "step" in e]
        runtime += sum(e.get("train_runtime", 0.0) for e in entries)
        offset += max((e["step"] for e in entries if "step" in e), default=0)
    run = runs[-1]
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for name in KEEP:
        shutil.copy(run / name, output / name)
    settings = json.loads((output / "processor_config.json").read_text())
    settings["image_processor"].update(SLIDING_WINDOW)
    (output / "processor_config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    fresh = evaluate_fresh(output, args.fresh_seed, args.fresh_count)
    whole = evaluate_fresh(output, args.fresh_seed, args.fresh_count, sliding_window=False)
    fresh["whole_image_mean_iou"] = whole["mean_iou"]
    # Trained on its seven classes only, the text tower from scratch: the pipelines warn about other names.
    config = json.loads((output / "config.json").read_text())
    config["closed_vocabulary"] = True
    (output / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # A complete model folder, as save_pretrained writes it: auto_map, custom_pipelines and the remote-code files.
    sync(output)
    plot_training_curve(history["log_history"], output / "training_curve.png", title="demo model on synthetic scenes")
    (output / "evaluation.json").write_text(json.dumps(fresh, indent=2) + "\n")
    model = FGASegModel.from_pretrained(output)
    clip = model.config.clip_config
    (output / "README.md").write_text(
        CARD.format(
            params=sum(p.numel() for p in model.parameters()) / 1e6,
            vision=f"{clip.vision_config.num_hidden_layers} layers of width {clip.vision_config.hidden_size}, "
            f"{clip.vision_config.patch_size} px patches at {model.config.clip_resolution} px",
            text=f"{clip.text_config.num_hidden_layers} layers of width {clip.text_config.hidden_size}",
            minutes=runtime / 60,
            classes=", ".join(model.config.id2label[i] for i in range(len(model.config.id2label))),
            scenes=fresh["scenes"], seed=fresh["generator_seed"], miou=fresh["mean_iou"],
            accuracy=fresh["overall_accuracy"], whole=fresh["whole_image_mean_iou"],
            rows="\n".join(f"| {n} | {v:.3f} |" for n, v in fresh["per_category_iou"].items()),
            steps=offset,
        ),
        encoding="utf-8",
    )
    write_example(Path(args.example), args.fresh_seed, args.fresh_count, args.example_size)
    print(json.dumps(fresh, indent=2))
    return 0 if fresh["mean_iou"] >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
