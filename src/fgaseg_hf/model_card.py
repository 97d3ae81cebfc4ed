"""Hugging Face Hub model cards for FGA-Seg and ITA models: render, write, parse and validate.

A card is YAML front matter (license, library, pipeline tag, tags, datasets, base model and a `model-index` with
the evaluation results in the Hub's schema) followed by a Markdown body filled into `CARD_TEMPLATE`: what the model
is (read from its `FGASegConfig` or `ITAConfig`), how to use, fine-tune and evaluate it, a results table and its
limitations. One renderer serves both architectures; what differs between them (summary, architecture table, classes
in the snippets, how fine-tuning starts, tags, default base model, wording) is a small `_Family` description.

Results are a mapping benchmark key -> entry::

    {"ade150": {"dataset_name": "ADE20K-150", "dataset_type": "scene_parse_150", "split": "validation",
                "mIoU": 0.312, "per_class_iou": {"wall": 0.71, ...}}}

`mIoU` and `per_class_iou` values are **fractions in [0, 1]** (what `fgaseg_hf.metrics` computes); the model-index
records them unchanged and the Markdown tables show them as percentages. A per-class IoU may be `null` for a class
absent from the benchmark.

Command line (the cards in the repository's `model_cards/` are generated this way)::

    python -m fgaseg_hf.model_card --preset vitb_384_fast_cat --output model_cards/fgaseg-vitb16-384.md
    python -m fgaseg_hf.model_card --preset ita_convnext_large_d_320 --output model_cards/ita-convnext-large-d-320.md
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

from .configuration_fgaseg import PRESET_DIR, FGASegConfig, available_presets
from .configuration_ita import VILD_TEMPLATES, ITAConfig, available_ita_presets

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
# Names of open_clip's ConvNeXt image trunks, by (stage widths, stage depths).
_CONVNEXT_NAMES = {
    ((128, 256, 512, 1024), (3, 3, 27, 3)): "ConvNeXt-Base",
    ((192, 384, 768, 1536), (3, 3, 27, 3)): "ConvNeXt-Large",
    ((384, 768, 1536, 3072), (3, 4, 30, 3)): "ConvNeXt-XXLarge",
}
# The CLIP ITA was released with (open_clip convnext_large_d_320, LAION-2B, fine-tuned soup).
ITA_CLIP_HUB_ID = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"

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


# ----------------------------------------------------------------------------------------------- architectures
def _joined(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


class _Family:
    """What a card says differently for one architecture; one instance per `model_type` in `FAMILIES`.

    The shared renderer asks it for the summary line, the architecture paragraph and table rows, the classes of the
    usage snippets, how fine-tuning starts, the tags, the default base model and the wording about weights."""

    model_type: str
    title: str  # the architecture's name in prose
    config_class: type
    model_class: str
    processor_class: str
    tags: tuple[str, ...]
    default_base_model: str  # the CLIP weights the snippets start from when no base model is known
    example_name: str  # the --model-name of the documented commands
    description: str  # the paragraph before the architecture table
    trained_note: str
    untrained_note: str  # "{base}" is " (`<base model>`)" or ""
    no_results: str

    def clip_variant(self, config) -> str:
        raise NotImplementedError

    def summary(self, config) -> str:
        raise NotImplementedError

    def rows(self, config) -> list[tuple[str, str]]:
        raise NotImplementedError

    def fine_tuning(self, source: _Source, base: str, preset_ref: str) -> tuple[str, list[str]]:
        """(the text and snippet that start fine-tuning, the lines of the run config's `model` block before
        `tokenizer`)."""
        raise NotImplementedError

    def limitations(self, config) -> list[str]:
        """The architecture's own items, between the shared ones."""
        raise NotImplementedError

    def preset_base_model(self, config) -> str | None:
        """Hub id of the CLIP weights a preset without `clip_pretrained` starts from, when it is known."""
        return None

    def card_name(self, preset: str, config) -> str:
        raise NotImplementedError


class _FGASegFamily(_Family):
    model_type = "fgaseg"
    title = "FGA-Seg"
    config_class = FGASegConfig
    model_class = "FGASegModel"
    processor_class = "FGASegProcessor"
    tags = tuple(CARD_TAGS)
    default_base_model = "openai/clip-vit-base-patch16"
    example_name = "my-fgaseg"
    description = (
        "FGA-Seg (Fine-Grained Alignment, the successor of CAT-Seg) segments an image into classes named in free text. "
        "It correlates dense CLIP image features with the CLIP text embeddings of every class name (in each prompt "
        "template), aggregates this cost volume spatially and across classes, aligns pixels and text with "
        "pixel-to-text cross-attention, and upsamples the result with guidance from intermediate CLIP layers."
    )
    trained_note = ("The weights were fine-tuned with `fgaseg_hf` from CLIP (the original authors of FGA-Seg "
                    "never released trained weights).")
    untrained_note = ("**No trained weights.** The original authors of FGA-Seg never released trained weights. "
                      "This card describes the architecture, initialised from the OpenAI CLIP weights{base} and "
                      "fine-tuned by you: the sections below show how to start training and how to evaluate the "
                      "result.")
    no_results = ("No evaluation results. The original authors of FGA-Seg never released their trained weights, so "
                  "this card describes the architecture initialised from the OpenAI CLIP weights, to be fine-tuned by "
                  "you; evaluate your run as shown above and regenerate the card to record its results.")

    def clip_variant(self, config: FGASegConfig) -> str:
        vision = config.clip_config.vision_config
        family = _CLIP_NAMES.get((vision.hidden_size, vision.num_hidden_layers))
        if family is None:
            return f"ViT (width {vision.hidden_size}, {vision.num_hidden_layers} layers)/{vision.patch_size}"
        return f"{family}/{vision.patch_size}"

    def summary(self, config: FGASegConfig) -> str:
        return (f"An FGA-Seg open-vocabulary semantic segmentation model on CLIP {self.clip_variant(config)} at "
                f"{config.clip_resolution} px, for `fgaseg_hf` and `transformers`: "
                "it segments an image into any classes you name.")

    def rows(self, config: FGASegConfig) -> list[tuple[str, str]]:
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
        return [
            ("Backbone", (f"CLIP {self.clip_variant(config)} (image tower: width {vision.hidden_size}, "
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

    def fine_tuning(self, source: _Source, base: str, preset_ref: str) -> tuple[str, list[str]]:
        start = f"""Start from the OpenAI CLIP weights (the FGA-Seg head is initialised at random):

```python
from fgaseg_hf import FGASegModel

model = FGASegModel.from_clip_pretrained("{base}", preset={preset_ref})
```"""
        return start, [f"preset: {source.preset or 'path/to/config.json'}", f"clip_pretrained: {base}"]

    def limitations(self, config: FGASegConfig) -> list[str]:
        return [("Predictions are made at a fraction of the input resolution and upsampled, so thin structures and "
                 "small objects are coarse; `sliding_window=True` helps on large images.")]

    def card_name(self, preset: str, config: FGASegConfig) -> str:
        variant = self.clip_variant(config).lower().replace("vit-", "vit").replace("/", "")
        return f"fgaseg-{variant}-{config.clip_resolution}"


class _ITAFamily(_Family):
    model_type = "ita"
    title = "ITA"
    config_class = ITAConfig
    model_class = "ITAModel"
    processor_class = "ITAProcessor"
    tags = ("ita", "fc-clip", "open-vocabulary", "semantic-segmentation", "clip")
    default_base_model = ITA_CLIP_HUB_ID
    example_name = "my-ita"
    description = (
        "ITA (Image-Text Aggregation, built on FC-CLIP) segments an image into classes named in free text. A frozen "
        "CLIP ConvNeXt gives multi-scale image features, which Mask2Former's deformable pixel decoder refines. The "
        "whole image also goes through CLIP against the vocabulary: the class names most similar to it (the dominant "
        "categories) become text queries of a masked-attention decoder, beside its learned queries. Each predicted "
        "mask is classified twice, by the decoder against the CLIP text embeddings of the classes (in-vocabulary) "
        "and by the frozen CLIP's features pooled inside the mask (out-of-vocabulary), and a geometric ensemble "
        "combines the two."
    )
    trained_note = ("The weights were trained with `fgaseg_hf` on a frozen open_clip CLIP (the original authors of "
                    "ITA never released trained weights).")
    untrained_note = ("**No trained weights.** The original authors of ITA never released trained weights. This card "
                      "describes the architecture, its frozen CLIP initialised from the open_clip ConvNeXt "
                      "weights{base} and its segmentation head trained by you: the sections below show how to start "
                      "training and how to evaluate the result.")
    no_results = ("No evaluation results. The original authors of ITA never released their trained weights, so this "
                  "card describes the architecture with its frozen open_clip CLIP and an untrained head, to be "
                  "trained by you; evaluate your run as shown above and regenerate the card to record its results.")

    def clip_variant(self, config: ITAConfig) -> str:
        # An unnamed trunk is just "ConvNeXt": the architecture table gives its sizes.
        vision = config.vision_config
        return _CONVNEXT_NAMES.get((tuple(vision.hidden_sizes), tuple(vision.depths)), "ConvNeXt")

    def summary(self, config: ITAConfig) -> str:
        return (f"An ITA open-vocabulary semantic segmentation model (FC-CLIP with dominant-category text queries) on "
                f"a frozen CLIP {self.clip_variant(config)}, for `fgaseg_hf` and `transformers`: "
                "it segments an image into any classes you name.")

    def rows(self, config: ITAConfig) -> list[tuple[str, str]]:
        vision = config.vision_config
        seen = len(config.seen_class_names)
        seen_text = (f"seen: sharing a synonym with one of the {seen} training classes in the config"
                     if seen else "no training classes stored yet (training stores its vocabulary; until then "
                     "every class counts as unseen)")
        templates = f"{len(config.prompt_templates)}" + (
            " (ViLD's)" if list(config.prompt_templates) == VILD_TEMPLATES else "")
        return [
            ("CLIP", (f"open_clip {self.clip_variant(config)}: stage widths {_joined(vision.hidden_sizes)}, "
                      f"depths {_joined(vision.depths)}; embedding size {config.projection_dim}; frozen")),
            ("Dominant categories", (f"the whole image ({config.clip_image_size} px crop) through CLIP against the "
                                     f"vocabulary; the {config.num_text_queries} closest names become text queries")),
            ("Pixel decoder", (f"Mask2Former multi-scale deformable attention: {config.encoder_layers} deformable "
                               f"layers, width {config.feature_size}, mask features {config.mask_feature_size} at "
                               f"1/{config.common_stride} resolution")),
            ("Decoder", (f"masked attention without self-attention: {config.decoder_layers} predictions "
                         f"({config.decoder_layers - 1} layers), width {config.hidden_dim}, "
                         f"{config.num_learned_queries} learned + {config.num_text_queries} text queries")),
            ("Ensemble", (f"geometric, weight of the CLIP branch alpha {config.geometric_ensemble_alpha:g} for seen "
                          f"classes, beta {config.geometric_ensemble_beta:g} for unseen ones; {seen_text}")),
            ("Prompt templates", f"{templates}: every synonym of a class in each, embeddings averaged"),
            ("Test size", (f"shortest edge {config.min_size_test} px, longest at most {config.max_size_test} px, "
                           f"padded to a multiple of {config.size_divisibility}")),
        ]

    def fine_tuning(self, source: _Source, base: str, preset_ref: str) -> tuple[str, list[str]]:
        start = f"""Start from the open_clip ConvNeXt CLIP weights (`open_clip_pytorch_model.bin` of `{base}`; the CLIP stays frozen, the ITA head is initialised at random):

```python
from huggingface_hub import hf_hub_download
from fgaseg_hf.configuration_ita import ita_preset_values
from fgaseg_hf.conversion_ita import convert_open_clip_checkpoint

weights = hf_hub_download("{base}", "open_clip_pytorch_model.bin")
# The CLIP's sizes come from its weights, the head's settings from the preset.
head = {{k: v for k, v in ita_preset_values({preset_ref}).items()
        if k not in ("vision_config", "text_config", "vision_head_hidden_size")}}
model = convert_open_clip_checkpoint(weights, "outputs/ita-init", **head)
```"""
        return start, ["family: ita", f"preset: {source.preset or 'path/to/config.json'}",
                       "clip_pretrained: path/to/open_clip_pytorch_model.bin"]

    def limitations(self, config: ITAConfig) -> list[str]:
        return [
            (f"Only the {config.num_text_queries} vocabulary names closest to the whole image become text queries; "
             f"objects of other classes rely on the {config.num_learned_queries} learned queries."),
            (f"Masks are predicted at 1/{config.common_stride} of the resized input (shortest edge "
             f"{config.min_size_test} px) and upsampled, so thin structures and small objects are coarse; there is "
             "no sliding-window inference."),
        ]

    def preset_base_model(self, config: ITAConfig) -> str | None:
        # The released ITA's CLIP: ConvNeXt-Large with a 768-d embedding, whole-image crops at 320 px.
        if (self.clip_variant(config), config.projection_dim, config.clip_image_size) == ("ConvNeXt-Large", 768, 320):
            return ITA_CLIP_HUB_ID
        return None

    def card_name(self, preset: str, config: ITAConfig) -> str:
        return preset.replace("_", "-")


FAMILIES: dict[str, _Family] = {family.model_type: family for family in (_FGASegFamily(), _ITAFamily())}


@dataclass
class _Source:
    """A config with what is known about where it came from."""

    config: FGASegConfig | ITAConfig
    family: _Family
    preset: str | None = None
    clip_pretrained: str | None = None
    model_dir: str | None = None


def _family_of_config(config: Any) -> _Family:
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    raise ValueError(f"no model card for a {type(config).__name__}: expected an FGASegConfig or an ITAConfig")


def _family_of_preset(data: Any) -> _Family:
    """FGA-Seg presets nest their values under "model" (with a ViT `clip_config`); ITA presets hold a ConvNeXt
    `vision_config` (with `hidden_sizes`) at the top level. A saved config.json says its `model_type`."""
    values = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise ValueError("a preset JSON is an object of config values")  # noqa: TRY004
    vision = values.get("vision_config")
    if values.get("model_type") == "ita" or (isinstance(vision, dict) and "hidden_sizes" in vision):
        return FAMILIES["ita"]
    return FAMILIES["fgaseg"]


def _load_source(model_dir_or_config: str | os.PathLike | FGASegConfig | ITAConfig) -> _Source:
    """A config, a model folder (with `config.json`), a preset JSON file or a preset name -> `_Source`."""
    if not isinstance(model_dir_or_config, (str, os.PathLike)):
        return _Source(model_dir_or_config, _family_of_config(model_dir_or_config))
    path = str(model_dir_or_config)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"{path} has no config.json: not a saved FGA-Seg or ITA model folder")
        with open(config_file, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
        family = FAMILIES.get(model_type)
        if family is None:
            raise ValueError(f"{path}: model cards are written for FGA-Seg and ITA models only, not {model_type!r}")
        return _Source(family.config_class.from_pretrained(path), family, model_dir=path)
    file = path if os.path.isfile(path) else os.path.join(PRESET_DIR, f"{path}.json")
    if not os.path.isfile(file):
        raise ValueError(f"unknown preset {path!r}; FGA-Seg presets: {available_presets()}, "
                         f"ITA presets: {available_ita_presets()}")
    with open(file, encoding="utf-8") as handle:
        data = json.load(handle)
    family = _family_of_preset(data)
    config = family.config_class.from_preset(path)
    preset = None if os.path.isfile(path) else path
    return _Source(config, family, preset=preset,
                   clip_pretrained=data.get("clip_pretrained") or family.preset_base_model(config))


def clip_variant(config: FGASegConfig | ITAConfig) -> str:
    """The CLIP image tower's name: "ViT-B/16" (from width, depth and patch size) or "ConvNeXt-Large"."""
    return _family_of_config(config).clip_variant(config)


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
    tags: Sequence[str] = tuple(CARD_TAGS),
) -> dict[str, Any]:
    """The card's front matter as a dict (key order is the order written); `tags` default to FGA-Seg's."""
    metadata: dict[str, Any] = {
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": list(tags),
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
    license: str = "apache-2.0",
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
        license: the license identifier.
        extra_sections: title -> Markdown, appended as `##` sections in order.
        repo_id: the id or path used in the usage snippets (default: `path/to/<model_name>`).

    Raises:
        ValueError: when `results` is malformed, or the folder or preset is not an FGA-Seg or ITA one.
    """
    source = _load_source(model_dir_or_config)
    family = source.family
    metadata = build_metadata(results, model_name=model_name, base_model=base_model, datasets=datasets,
                              license=license, tags=family.tags)
    trained = source.model_dir is not None or bool(results)
    if trained:
        weights_note = family.trained_note
    else:
        weights_note = family.untrained_note.format(base=f" (`{base_model}`)" if base_model else "")
    extra = "".join(f"\n## {title}\n\n{body.strip()}\n" for title, body in (extra_sections or {}).items())
    body = string.Template(CARD_TEMPLATE).substitute(
        title=model_name,
        summary=family.summary(source.config),
        architecture=_architecture(source),
        weights_note=weights_note,
        usage=_usage(source, repo_id or f"path/to/{model_name}", base_model, trained),
        results=_results(results, family),
        limitations=_limitations(source, trained),
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
