"""Hugging Face Hub model cards for FGA-Seg models: render, write, parse and validate.

A card is YAML front matter (license, library, pipeline tag, tags, datasets, base model and a `model-index` with
the evaluation results in the Hub's schema) followed by a Markdown body filled into `CARD_TEMPLATE`: what the model
is (read from its `FGASegConfig`), how to use, fine-tune and evaluate it, a results table and its limitations.

Results are a mapping benchmark key -> entry::

    {"ade150": {"dataset_name": "ADE20K-150", "dataset_type": "scene_parse_150", "split": "validation",
                "mIoU": 0.312, "per_class_iou": {"wall": 0.71, ...}}}

`mIoU` and `per_class_iou` values are **fractions in [0, 1]** (what `fgaseg_hf.metrics` computes); the model-index
records them unchanged and the Markdown tables show them as percentages. A per-class IoU may be `null` for a class
absent from the benchmark.

Command line (the cards in the repository's `model_cards/` are generated this way)::

    python -m fgaseg_hf.model_card --preset vitb_384_fast_cat --output model_cards/fgaseg-vitb16-384.md
    python -m fgaseg_hf.model_card --model-dir outputs/my_run --results eval.json --model-name my-fgaseg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .configuration_fgaseg import PRESET_DIR, FGASegConfig

REQUIRED_METADATA_KEYS = ("license", "library_name", "pipeline_tag", "tags")
CARD_TAGS = ["fgaseg", "open-vocabulary", "semantic-segmentation", "clip"]
TASK = {"type": "image-segmentation", "name": "Semantic Segmentation"}
METRIC_TYPE = "mean_iou"
METRIC_NAME = "mIoU"

# The evaluation command the cards document; kept in one place so the card follows the CLI when its flags change.
EVALUATE_COMMAND = (
    "fgaseg prepare ade150 --root datasets --archive ADEChallengeData2016.zip   # once per benchmark\n"
    "fgaseg evaluate --model {model} --benchmarks ade847,pc459,ade150,pc59,voc20,voc20b --root datasets "
    "--output eval.json\n"
    "accelerate launch scripts/evaluate.py --model {model} --root datasets --output eval.json   # several GPUs"
)

# Names of the presets' CLIP backbones, by (vision width, vision layers).
_CLIP_NAMES = {(768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H", (1664, 48): "ViT-bigG"}

# The card body; `$name` placeholders are filled by `render_model_card` (string.Template, `$$` is a literal `$`).
# `model_cards/template.md` holds this same text.
CARD_TEMPLATE = """\
# $title

$summary

## Model description

$architecture

$weights_note

## How to use

$usage

## Results

$results

## Limitations

$limitations
$extra_sections"""


@dataclass
class _Source:
    """A config with what is known about where it came from."""

    config: FGASegConfig
    preset: str | None = None
    clip_pretrained: str | None = None
    model_dir: str | None = None


def _load_source(model_dir_or_config: str | os.PathLike | FGASegConfig) -> _Source:
    """An `FGASegConfig`, a model folder (with `config.json`), a preset JSON file or a preset name -> `_Source`."""
    if isinstance(model_dir_or_config, FGASegConfig):
        return _Source(model_dir_or_config)
    path = str(model_dir_or_config)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"{path} has no config.json: not a saved FGA-Seg model folder")
        return _Source(FGASegConfig.from_pretrained(path), model_dir=path)
    file = path if os.path.isfile(path) else os.path.join(PRESET_DIR, f"{path}.json")
    config = FGASegConfig.from_preset(path)
    preset = None if os.path.isfile(path) else path
    clip_pretrained = None
    if os.path.isfile(file):
        with open(file, encoding="utf-8") as handle:
            clip_pretrained = json.load(handle).get("clip_pretrained")
    return _Source(config, preset=preset, clip_pretrained=clip_pretrained)


def clip_variant(config: FGASegConfig) -> str:
    """The CLIP image tower's name, e.g. "ViT-B/16", from its width, depth and patch size."""
    vision = config.clip_config.vision_config
    family = _CLIP_NAMES.get((vision.hidden_size, vision.num_hidden_layers))
    if family is None:
        return f"ViT (width {vision.hidden_size}, {vision.num_hidden_layers} layers)/{vision.patch_size}"
    return f"{family}/{vision.patch_size}"


# ----------------------------------------------------------------------------------------------- validation
# Malformed results or metadata raise ValueError (as huggingface_hub does), wrong types included: hence TRY004 noqa.
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_results(results: Mapping[str, Any]) -> None:
    """Check a results mapping (see the module docstring); raise ValueError naming the first problem."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping benchmark key -> entry")
    for key, entry in results.items():
        where = f"results[{key!r}]"
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: benchmark keys must be non-empty strings")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping, got {type(entry).__name__}")  # noqa: TRY004
        for field in ("dataset_name", "dataset_type", "split"):
            if not isinstance(entry.get(field), str) or not entry[field].strip():
                raise ValueError(f"{where} needs a non-empty string {field!r}")
        miou = entry.get("mIoU")
        if not _is_number(miou) or not 0.0 <= miou <= 1.0:
            raise ValueError(f"{where}['mIoU'] must be a fraction in [0, 1] (not a percentage), got {miou!r}")
        per_class = entry.get("per_class_iou")
        if per_class is not None:
            if not isinstance(per_class, Mapping) or not per_class:
                raise ValueError(f"{where}['per_class_iou'] must be a non-empty mapping class name -> IoU")
            for name, value in per_class.items():
                if value is not None and (not _is_number(value) or not 0.0 <= value <= 1.0):
                    raise ValueError(f"{where}['per_class_iou'][{name!r}] must be a fraction in [0, 1] or null")
        unknown = set(entry) - {"dataset_name", "dataset_type", "split", "mIoU", "per_class_iou"}
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)}")


def validate_model_index(metadata: Mapping[str, Any]) -> None:
    """Check the `model-index` block of card metadata against the Hub's schema; raise ValueError if malformed.

    Metadata without a `model-index` is valid. Each result needs a task (with a type), a dataset (name and type)
    and at least one metric with a type and a finite numeric value.
    """
    if "model-index" not in metadata:
        return
    index = metadata["model-index"]
    if not isinstance(index, list) or not index:
        raise ValueError("model-index must be a non-empty list")
    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        if not isinstance(model, Mapping):
            raise ValueError(f"{where} must be a mapping")  # noqa: TRY004
        if not isinstance(model.get("name"), str) or not model["name"]:
            raise ValueError(f"{where} needs a non-empty 'name'")
        results = model.get("results")
        if not isinstance(results, list) or not results:
            raise ValueError(f"{where}.results must be a non-empty list")
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(result, Mapping):
                raise ValueError(f"{at} must be a mapping")  # noqa: TRY004
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, Mapping) or not isinstance(task.get("type"), str):
                raise ValueError(f"{at}.task needs a string 'type'")  # noqa: TRY004
            if not isinstance(dataset, Mapping) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
                raise ValueError(f"{at}.dataset needs string 'name' and 'type'")
            if "split" in dataset and not isinstance(dataset["split"], str):
                raise ValueError(f"{at}.dataset.split must be a string")
            if not isinstance(metrics, list) or not metrics:
                raise ValueError(f"{at}.metrics must be a non-empty list")
            for k, metric in enumerate(metrics):
                if not isinstance(metric, Mapping) or not isinstance(metric.get("type"), str):
                    raise ValueError(f"{at}.metrics[{k}] needs a string 'type'")  # noqa: TRY004
                if not _is_number(metric.get("value")):
                    raise ValueError(f"{at}.metrics[{k}].value must be a finite number, got {metric.get('value')!r}")


# ----------------------------------------------------------------------------------------------- rendering
def build_metadata(
    results: Mapping[str, Any] | None,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
) -> dict[str, Any]:
    """The card's front matter as a dict (key order is the order written)."""
    metadata: dict[str, Any] = {
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": list(CARD_TAGS),
    }
    if datasets:
        metadata["datasets"] = list(datasets)
    if base_model:
        metadata["base_model"] = base_model
    if results:
        validate_results(results)
        metadata["model-index"] = [{
            "name": model_name,
            "results": [
                {
                    "task": dict(TASK),
                    "dataset": {"name": e["dataset_name"], "type": e["dataset_type"], "split": e["split"]},
                    "metrics": [{"type": METRIC_TYPE, "value": e["mIoU"], "name": METRIC_NAME}],
                }
                for e in results.values()
            ],
        }]
        validate_model_index(metadata)
    return metadata


def _architecture(source: _Source) -> str:
    config = source.config
    vision = config.clip_config.vision_config
    grid, out = config.feature_resolution, config.output_resolution
    if config.decoder_mode == "fast":
        decoder = (f"`fast`: three auxiliary heads during training; at inference only the top "
                   f"{config.inference_top_k} classes (per {config.top_k_scope}) go through the full decoder")
    else:
        decoder = "`no_fast`: every class goes through the full decoder"
    fusion = {"cat": "`cat`: pixel and text features are concatenated, then projected",
              "add": "`add`: pixel and text features are summed"}.get(config.fusion_mode, f"`{config.fusion_mode}`")
    templates = "; ".join(f"`{t}`" for t in config.prompt_templates)
    rows = [
        ("Backbone", (f"CLIP {clip_variant(config)} (image tower: width {vision.hidden_size}, "
                     f"{vision.num_hidden_layers} layers; CLIP fine-tuning: `{config.clip_finetune}`)")),
        ("Input resolution", (f"{config.clip_resolution} x {config.clip_resolution} px, "
                             f"{grid} x {grid} token grid, logits at {out} x {out}")),
        ("Guidance layers", ", ".join(str(i) for i in config.guidance_layers) + " (CLIP image blocks)"),
        ("Cost aggregation", (f"{config.num_aggregation_layers} spatial + class layers, width {config.hidden_dim}, "
                             f"{config.class_attention_type} class attention")),
        ("Decoder mode", decoder),
        ("Fusion", fusion),
        ("Prompt templates", f"{config.num_templates}: {templates}"),
    ]
    if source.preset:
        rows.insert(0, ("Preset", f"`{source.preset}`"))
    table = "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    return (
        "FGA-Seg (Fine-Grained Alignment, the successor of CAT-Seg) segments an image into classes named in free text. "
        "It correlates dense CLIP image features with the CLIP text embeddings of every class name (in each prompt "
        "template), aggregates this cost volume spatially and across classes, aligns pixels and text with "
        "pixel-to-text cross-attention, and upsamples the result with guidance from intermediate CLIP layers.\n\n"
        + table
    )


def _usage(source: _Source, model_ref: str, base_model: str | None, trained: bool) -> str:
    preset_ref = f'"{source.preset}"' if source.preset else '"path/to/config.json"'
    base = base_model or source.clip_pretrained or "openai/clip-vit-base-patch16"
    model_line = f'  preset: {source.preset}' if source.preset else "  preset: path/to/config.json"
    evaluate = EVALUATE_COMMAND.format(model=model_ref)
    intro = "" if trained else (
        f"There are no trained weights to download: build the model from CLIP and fine-tune it first "
        f"(next sections); `{model_ref}` below is the folder your training run saves.\n\n")
    return f"""{intro}With a pipeline (`trust_remote_code=True` loads the task the folder defines):

```python
from transformers import pipeline

segmenter = pipeline("open-vocabulary-segmentation", model="{model_ref}", trust_remote_code=True)
segmenter("street.jpg", candidate_labels=["sky", "road", "car"])
# [{{'label': 'sky', 'score': ..., 'mask': <PIL.Image mode=L>}}, ...]

pipeline("image-segmentation", model="{model_ref}", trust_remote_code=True)("street.jpg")  # its own vocabulary
```

With the processor and the model:

```python
import torch
from fgaseg_hf import FGASegModel, FGASegProcessor

model = FGASegModel.from_pretrained("{model_ref}").eval()
processor = FGASegProcessor.from_pretrained("{model_ref}")
inputs = processor(images=image, text=["sky", "road", "car"])
with torch.no_grad():
    outputs = model(**inputs)
label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
```

### Fine-tuning

Start from the OpenAI CLIP weights (the FGA-Seg head is initialised at random):

```python
from fgaseg_hf import FGASegModel

model = FGASegModel.from_clip_pretrained("{base}", preset={preset_ref})
```

or train with a run config (`fgaseg_hf/training.py` documents every key):

```yaml
model:
{model_line}
  clip_pretrained: {base}
  tokenizer: clip
data:
  dataset: path/or/hub-name
  image_column: image
  label_column: annotation
  class_names: classes.json
training:
  output_dir: outputs/my_run
```

```bash
fgaseg train --config my_run.yaml
torchrun --nproc_per_node 4 scripts/train.py --config my_run.yaml   # several GPUs
```

### Evaluation

```bash
{evaluate}
python -m fgaseg_hf.model_card --model-dir {model_ref} --results eval.json --model-name my-fgaseg --write
```

`eval.json` holds the mIoU per benchmark (detectron2's definition, as published: the mean over classes present in
the split) and every class's IoU; `eval.md` is the same as tables. The last command regenerates this card with the
results (fractions in [0, 1]) in its `model-index`; `fgaseg evaluate --card` writes such a card directly."""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}"


def _results(results: Mapping[str, Any] | None) -> str:
    if not results:
        return ("No evaluation results. The original authors of FGA-Seg never released their trained weights, so "
                "this card describes the architecture initialised from the OpenAI CLIP weights, to be fine-tuned by "
                "you; evaluate your run as shown above and regenerate the card to record its results.")
    lines = ["| Benchmark | Dataset | Split | mIoU (%) |", "|---|---|---|---|"]
    for key, e in results.items():
        lines.append(f"| {key} | {e['dataset_name']} (`{e['dataset_type']}`) | {e['split']} | {_pct(e['mIoU'])} |")
    text = "\n".join(lines)
    for key, e in results.items():
        per_class = e.get("per_class_iou")
        if per_class:
            rows = "\n".join(f"| {name} | {_pct(v)} |" for name, v in per_class.items())
            text += (f"\n\n<details>\n<summary>Per-class IoU on {key}</summary>\n\n"
                     f"| Class | IoU (%) |\n|---|---|\n{rows}\n\n</details>")
    return text


def _limitations(trained: bool) -> str:
    items = [
        ("Open-vocabulary quality depends on CLIP's knowledge of a class name: rare, ambiguous or very fine-grained "
        "names segment worse, and results change with the wording of names and prompt templates."),
        ("Predictions are made at a fraction of the input resolution and upsampled, so thin structures and small "
        "objects are coarse; `sliding_window=True` helps on large images."),
        ("The model inherits the biases of CLIP's web-scale training data and of the segmentation data it was "
        "fine-tuned on; it is not meant for safety-critical decisions or for identifying people."),
    ]
    if not trained:
        items.insert(0, "No trained weights come with this card: before fine-tuning the segmentation head is "
                        "random and its output is meaningless.")
    return "\n".join(f"- {item}" for item in items)


def render_model_card(
    model_dir_or_config: str | os.PathLike | FGASegConfig,
    results: Mapping[str, Any] | None = None,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    extra_sections: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """Render a Hub model card (YAML front matter + Markdown) for an FGA-Seg model.

    Args:
        model_dir_or_config: an `FGASegConfig`, a saved model folder, a preset name or a preset JSON path.
        results: benchmark key -> {"dataset_name", "dataset_type", "split", "mIoU", optional "per_class_iou"},
            IoUs as fractions in [0, 1]; becomes the `model-index` and the results table.
        model_name: the model's name (card title and `model-index` name).
        base_model: Hub id of the CLIP weights it starts from (front matter `base_model`).
        datasets: Hub ids of the training datasets (front matter `datasets`).
        license: the license identifier.
        extra_sections: title -> Markdown, appended as `##` sections in order.
        repo_id: the id or path used in the usage snippets (default: `path/to/<model_name>`).

    Raises:
        ValueError: when `results` is malformed.
    """
    source = _load_source(model_dir_or_config)
    metadata = build_metadata(results, model_name=model_name, base_model=base_model, datasets=datasets,
                              license=license)
    trained = source.model_dir is not None or bool(results)
    if trained:
        weights_note = ("The weights were fine-tuned with `fgaseg_hf` from CLIP (the original authors of FGA-Seg "
                        "never released trained weights).")
    else:
        weights_note = ("**No trained weights.** The original authors of FGA-Seg never released trained weights. "
                        "This card describes the architecture, initialised from the OpenAI CLIP weights"
                        + (f" (`{base_model}`)" if base_model else "")
                        + " and fine-tuned by you: the sections below show how to start training and how to "
                        "evaluate the result.")
    extra = "".join(f"\n## {title}\n\n{body.strip()}\n" for title, body in (extra_sections or {}).items())
    body = string.Template(CARD_TEMPLATE).substitute(
        title=model_name,
        summary=(f"An FGA-Seg open-vocabulary semantic segmentation model on CLIP {clip_variant(source.config)} at "
                 f"{source.config.clip_resolution} px, for `fgaseg_hf` and `transformers`: "
                 "it segments an image into any classes you name."),
        architecture=_architecture(source),
        weights_note=weights_note,
        usage=_usage(source, repo_id or f"path/to/{model_name}", base_model, trained),
        results=_results(results),
        limitations=_limitations(trained),
        extra_sections=extra,
    )
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{front}---\n\n{body}"


def write_model_card(folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card of the model saved in `folder` and (over)write `folder/README.md`; returns its path.

    Keyword arguments go to `render_model_card` (`model_name` is required).
    """
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(folder, **kwargs), encoding="utf-8")
    return path


def parse_model_card(text: str) -> tuple[dict[str, Any], str]:
    """Split a card into (metadata, body), checking that the Hub accepts the metadata.

    Raises:
        ValueError: no front matter, YAML that is not a mapping, or metadata (including `model-index`) that
            `huggingface_hub.ModelCard` or `validate_model_index` rejects.
    """
    from huggingface_hub import ModelCard

    if not text.startswith("---\n"):
        raise ValueError("a model card starts with '---' YAML front matter")
    end = text.find("\n---\n", 3)
    if end < 0:
        raise ValueError("unterminated YAML front matter (no closing '---')")
    try:
        metadata = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"invalid YAML front matter: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError("the YAML front matter must be a mapping")  # noqa: TRY004
    validate_model_index(metadata)
    ModelCard(text, ignore_metadata_errors=False)  # raises ValueError on metadata the Hub cannot parse
    return metadata, text[end + len("\n---\n"):].lstrip("\n")


# ----------------------------------------------------------------------------------------------- command line
def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read an evaluation JSON: the results mapping itself, or an object with it under "results"."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        data = data["results"]
    validate_results(data)
    return data


def default_model_name(preset: str) -> str:
    """The card name of a preset: "vitb_384_fast_cat" -> "fgaseg-vitb16-384" (its CLIP variant and resolution)."""
    config = FGASegConfig.from_preset(preset)
    variant = clip_variant(config).lower().replace("vit-", "vit").replace("/", "")
    return f"fgaseg-{variant}-{config.clip_resolution}"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fgaseg_hf.model_card`: write a card for a preset or for a trained model folder."""
    parser = argparse.ArgumentParser(prog="python -m fgaseg_hf.model_card", description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help='a preset name ("vitb_384_fast_cat") or preset JSON: an untrained card')
    what.add_argument("--model-dir", help="a saved FGA-Seg model folder")
    parser.add_argument("--results", help="evaluation JSON: benchmark key -> {dataset_name, dataset_type, split, "
                        "mIoU (fraction in [0, 1]), per_class_iou}")
    parser.add_argument("--model-name", help="card title / model-index name (default: from the preset)")
    parser.add_argument("--base-model", help="Hub id of the CLIP weights (default: the preset's clip_pretrained)")
    parser.add_argument("--dataset", action="append", dest="datasets", help="Hub id of a training dataset (repeat)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--repo-id", help="id or path shown in the usage snippets")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--output", help="file to write (default: stdout)")
    out.add_argument("--write", action="store_true", help="write <model-dir>/README.md")
    args = parser.parse_args(argv)
    try:
        source = _load_source(args.preset or args.model_dir)
        if args.model_name:
            model_name = args.model_name
        elif args.preset and source.preset:
            model_name = default_model_name(args.preset)
        else:
            parser.error("--model-name is required unless --preset names a packaged preset")
        if args.write and not args.model_dir:
            parser.error("--write needs --model-dir")
        results = load_results(args.results) if args.results else None
        text = render_model_card(
            args.preset or args.model_dir, results, model_name=model_name,
            base_model=args.base_model or source.clip_pretrained, datasets=args.datasets, license=args.license,
            repo_id=args.repo_id,
        )
        parse_model_card(text)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    target = Path(args.model_dir) / "README.md" if args.write else (Path(args.output) if args.output else None)
    if target is None:
        sys.stdout.write(text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}", file=sys.stderr)
    return 0


__all__ = [
    "CARD_TEMPLATE",
    "build_metadata",
    "parse_model_card",
    "render_model_card",
    "validate_model_index",
    "validate_results",
    "write_model_card",
]


if __name__ == "__main__":
    sys.exit(main())
