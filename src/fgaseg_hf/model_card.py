"""Hugging Face Hub model cards for FGA-Seg, CAT-Seg, ITA and FC-CLIP models: render, write, parse and validate.

A card is YAML front matter (license, library, pipeline tag, tags, datasets, base model and a `model-index` with
the evaluation results in the Hub's schema) followed by a Markdown body filled into `CARD_TEMPLATE`: what the model
is (read from its config), how to use, fine-tune and evaluate it, a results table and its limitations. One renderer
serves every architecture; what differs between them (summary, architecture table, classes in the snippets, how
fine-tuning starts, tags, licence, default base model, wording) is a small `_Family` description in
`fgaseg_hf.model_card_families`. The front matter and its `model-index` are built and validated in
`fgaseg_hf.model_card_index`; every name of both stays importable from here.

Results are a mapping benchmark key -> entry::

    {"ade150": {"dataset_name": "ADE20K-150", "dataset_type": "scene_parse_150", "split": "validation",
                "mIoU": 0.312, "per_class_iou": {"wall": 0.71, ...}}}

`mIoU` and `per_class_iou` values are **fractions in [0, 1]** (what `fgaseg_hf.metrics` computes); the model-index
records them unchanged and the Markdown tables show them as percentages. A per-class IoU may be `null` for a class
absent from the benchmark.

Command line (the cards in the repository's `model_cards/` are generated this way)::

    python -m fgaseg_hf.model_card --preset vitb_384_fast_cat --output model_cards/fgaseg-vitb16-384.md
    python -m fgaseg_hf.model_card --preset catseg_vitb_384 --output model_cards/catseg-vitb16-384.md
    python -m fgaseg_hf.model_card --preset ita_convnext_large_d_320 --output model_cards/ita-convnext-large-d-320.md
    python -m fgaseg_hf.model_card --preset fcclip_convnext_large --output model_cards/fcclip-convnext-large.md
    python -m fgaseg_hf.model_card --model-dir outputs/my_run --results eval.json --model-name my-fgaseg
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .configuration_fgaseg import FGASegConfig
from .configuration_ita import ITAConfig
from .model_card_families import (  # noqa: F401  (ITA_CLIP_HUB_ID and clip_variant: part of this module's API)
    FAMILIES,
    ITA_CLIP_HUB_ID,
    _Family,
    _load_source,
    _Source,
    clip_variant,
)
from .model_card_index import (  # noqa: F401  (re-exported: the metadata half of this module's API)
    CARD_TAGS,
    METRIC_NAME,
    METRIC_TYPE,
    REQUIRED_METADATA_KEYS,
    TASK,
    build_metadata,
    validate_model_index,
    validate_results,
)


# The evaluation command the cards document; kept in one place so the card follows the CLI when its flags change.
EVALUATE_COMMAND = (
    "fgaseg prepare ade150 --root datasets --archive ADEChallengeData2016.zip   # once per benchmark\n"
    "fgaseg evaluate --model {model} --benchmarks ade847,pc459,ade150,pc59,voc20,voc20b --root datasets "
    "--output eval.json\n"
    "accelerate launch scripts/evaluate.py --model {model} --root datasets --output eval.json   # several GPUs"
)

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


# ----------------------------------------------------------------------------------------------- rendering
def _architecture(source: _Source) -> str:
    rows = source.family.rows(source.config)
    if source.preset:
        rows.insert(0, ("Preset", f"`{source.preset}`"))
    table = "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    return source.family.description + "\n\n" + table


def _usage(source: _Source, model_ref: str, base_model: str | None, trained: bool) -> str:
    family = source.family
    preset_ref = f'"{source.preset}"' if source.preset else '"path/to/config.json"'
    base = base_model or source.clip_pretrained or family.default_base_model
    start, model_lines = family.fine_tuning(source, base, preset_ref)
    model_block = "\n".join(f"  {line}" for line in model_lines)
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
from fgaseg_hf import {family.model_class}, {family.processor_class}

model = {family.model_class}.from_pretrained("{model_ref}").eval()
processor = {family.processor_class}.from_pretrained("{model_ref}")
inputs = processor(images=image, text=["sky", "road", "car"])
with torch.no_grad():
    outputs = model(**inputs)
label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
```

### Fine-tuning

{start}

or train with a run config (`fgaseg_hf/training.py` documents every key):

```yaml
model:
{model_block}
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
python -m fgaseg_hf.model_card --model-dir {model_ref} --results eval.json --model-name {family.example_name} --write
```

`eval.json` holds the mIoU per benchmark (detectron2's definition, as published: the mean over classes present in
the split) and every class's IoU; `eval.md` is the same as tables. The last command regenerates this card with the
results (fractions in [0, 1]) in its `model-index`; `fgaseg evaluate --card` writes such a card directly."""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}"


def _results(results: Mapping[str, Any] | None, family: _Family) -> str:
    if not results:
        return family.no_results
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


def _limitations(source: _Source, trained: bool) -> str:
    items = [
        ("Open-vocabulary quality depends on CLIP's knowledge of a class name: rare, ambiguous or very fine-grained "
        "names segment worse, and results change with the wording of names and prompt templates."),
        *source.family.limitations(source.config),
        ("The model inherits the biases of CLIP's web-scale training data and of the segmentation data it was "
        "fine-tuned on; it is not meant for safety-critical decisions or for identifying people."),
    ]
    if not trained:
        items.insert(0, "No trained weights come with this card: before fine-tuning the segmentation head is "
                        "random and its output is meaningless.")
    return "\n".join(f"- {item}" for item in items)


def render_model_card(
    model_dir_or_config: str | os.PathLike | FGASegConfig | ITAConfig,
    results: Mapping[str, Any] | None = None,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """Render a Hub model card (YAML front matter + Markdown) for an FGA-Seg or ITA model.

    Args:
        model_dir_or_config: an `FGASegConfig` or `ITAConfig`, a saved model folder (its config.json's `model_type`
            says which), a preset name or a preset JSON path (of either architecture).
        results: benchmark key -> {"dataset_name", "dataset_type", "split", "mIoU", optional "per_class_iou"},
            IoUs as fractions in [0, 1]; becomes the `model-index` and the results table.
        model_name: the model's name (card title and `model-index` name).
        base_model: Hub id of the CLIP weights it starts from (front matter `base_model`).
        datasets: Hub ids of the training datasets (front matter `datasets`).
        license: the license identifier (default: the family's, "mit" for CAT-Seg and "apache-2.0" otherwise).
        extra_sections: title -> Markdown, appended as `##` sections in order.
        repo_id: the id or path used in the usage snippets (default: `path/to/<model_name>`).

    Raises:
        ValueError: when `results` is malformed, or the folder or preset is not an FGA-Seg or ITA one.
    """
    source = _load_source(model_dir_or_config)
    family = source.family
    metadata = build_metadata(results, model_name=model_name, base_model=base_model, datasets=datasets,
                              license=license or family.license, tags=family.tags)
    trained = source.model_dir is not None or bool(results)
    # A preset card of a family with published weights describes those weights (converted), not an untrained head.
    published = not trained and family.published_note is not None
    model_ref = repo_id or f"path/to/{model_name}"
    if trained:
        weights_note = family.trained_note
    elif published:
        weights_note = family.published_note
    else:
        weights_note = family.untrained_note.format(base=f" (`{base_model}`)" if base_model else "")
    sections = dict(extra_sections or {})
    if family.citation and "Citation" not in sections:
        sections["Citation"] = f"```bibtex\n{family.citation}\n```"
    extra = "".join(f"\n## {title}\n\n{body.strip()}\n" for title, body in sections.items())
    body = string.Template(CARD_TEMPLATE).substitute(
        title=model_name,
        summary=family.summary(source.config),
        architecture=_architecture(source),
        weights_note=weights_note,
        usage=(family.obtain(model_ref) if published else "") + _usage(source, model_ref, base_model, trained or published),
        results=family.published_results(model_ref) if published else _results(results, family),
        limitations=_limitations(source, trained or published),
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
    """The card name of a preset: "vitb_384_fast_cat" -> "fgaseg-vitb16-384" (its CLIP variant and resolution),
    "ita_convnext_large_d_320" -> "ita-convnext-large-d-320" (the preset's name)."""
    source = _load_source(preset)
    return source.family.card_name(preset, source.config)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fgaseg_hf.model_card`: write a card for a preset or for a trained model folder."""
    parser = argparse.ArgumentParser(prog="python -m fgaseg_hf.model_card", description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help='a preset name ("vitb_384_fast_cat", "ita_convnext_large_d_320") or preset JSON: an untrained card')
    what.add_argument("--model-dir", help="a saved FGA-Seg or ITA model folder")
    parser.add_argument("--results", help="evaluation JSON: benchmark key -> {dataset_name, dataset_type, split, "
                        "mIoU (fraction in [0, 1]), per_class_iou}")
    parser.add_argument("--model-name", help="card title / model-index name (default: from the preset)")
    parser.add_argument("--base-model", help="Hub id of the CLIP weights (default: the preset's clip_pretrained)")
    parser.add_argument("--dataset", action="append", dest="datasets", help="Hub id of a training dataset (repeat)")
    parser.add_argument("--license", help='license identifier (default: "mit" for CAT-Seg, "apache-2.0" otherwise)')
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
    "FAMILIES",
    "build_metadata",
    "clip_variant",
    "default_model_name",
    "parse_model_card",
    "render_model_card",
    "validate_model_index",
    "validate_results",
    "write_model_card",
]


if __name__ == "__main__":
    sys.exit(main())
