"""What a model card says for each architecture, and how the card's source (config, folder, preset) is read.

`fgaseg_hf.model_card` has one renderer for every architecture; what differs between them (summary, architecture
table, classes in the snippets, how fine-tuning starts, tags, licence, default base model, wording, published
weights and results) is a small `_Family` description, one per `model_type` in `FAMILIES`. `_load_source` turns a
config object, a saved model folder, a preset name or a preset JSON into a `_Source`: the config and its family.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .configuration_catseg import CATSEG_SWITCHES, CATSegConfig
from .configuration_fcclip import FCCLIPConfig, available_fcclip_presets
from .configuration_fgaseg import PRESET_DIR, FGASegConfig, available_presets
from .configuration_ita import VILD_TEMPLATES, ITAConfig, available_ita_presets
from .model_card_index import CARD_TAGS

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
    license: str  # the card's licence unless the caller names one (CAT-Seg's released weights are MIT)
    default_base_model: str  # the CLIP weights the snippets start from when no base model is known
    example_name: str  # the --model-name of the documented commands
    description: str  # the paragraph before the architecture table
    trained_note: str
    untrained_note: str  # "{base}" is " (`<base model>`)" or ""
    no_results: str
    # Families whose original authors published weights: how a preset card tells to get and convert them (the card
    # then describes those weights, not an untrained head), their published results and the citation.
    published_note: str | None = None
    citation: str | None = None

    def obtain(self, model_ref: str) -> str:
        """Where the published weights come from and the commands that convert them into `model_ref`."""
        raise NotImplementedError

    def published_results(self, model_ref: str) -> str:
        """The original authors' results (marked as theirs) and the command that reproduces them."""
        raise NotImplementedError

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
    license = "apache-2.0"
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
    license = "apache-2.0"
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


FCCLIP_WEIGHTS_URL = "https://drive.google.com/file/d/1-91PIns86vyNaL3CzMmDD39zKGnPMtvj/view?usp=sharing"
FCCLIP_CONFIG = "configs/coco/panoptic-segmentation/fcclip/fcclip_convnext_large_eval_ade20k.yaml"
# FC-CLIP's README (bytedance/fc-clip, "Model Zoo"), ConvNeXt-Large row: (benchmark, PQ, mAP, mIoU, our key).
FCCLIP_PUBLISHED = [
    ("ADE20K (A-150)", "26.8", "16.8", "34.1", "ade150"), ("Cityscapes", "44.0", "26.8", "56.2", None),
    ("Mapillary Vistas", "18.3", "-", "27.8", None), ("ADE20K-Full (A-847)", "-", "-", "14.8", "ade847"),
    ("Pascal Context 59 (PC-59)", "-", "-", "58.4", "pc59"), ("Pascal Context 459 (PC-459)", "-", "-", "18.2", "pc459"),
    ("Pascal VOC 21 (PAS-21)", "-", "-", "81.8", None), ("Pascal VOC 20 (PAS-20)", "-", "-", "95.4", "voc20"),
    ("COCO panoptic (training set)", "54.4", "44.6", "63.7", None),
]


class _FCCLIPFamily(_ITAFamily):
    """FC-CLIP, ITA's parent, whose authors published weights (`fcclip_cocopan.pth`, Apache-2.0)."""

    model_type = "fcclip"
    title = "FC-CLIP"
    config_class = FCCLIPConfig
    model_class = "FCCLIPModel"
    tags = ("fc-clip", "open-vocabulary", "semantic-segmentation", "clip")
    license = "apache-2.0"
    example_name = "my-fcclip"
    description = (
        "FC-CLIP (Yu et al., NeurIPS 2023) segments an image into classes named in free text with a single frozen "
        "convolutional CLIP. The CLIP ConvNeXt gives multi-scale image features, which Mask2Former's deformable "
        "pixel decoder refines; a masked-attention decoder (cross-attention, self-attention, FFN) turns learned "
        "queries into masks. Each mask is classified twice, by the decoder against the CLIP text embeddings of the "
        "classes (in-vocabulary) and by the frozen CLIP's features pooled inside the mask (out-of-vocabulary), and a "
        "geometric ensemble combines the two."
    )
    trained_note = ("The weights are FC-CLIP's published checkpoint converted with `fgaseg_hf` (or a fine-tuning "
                    "run started from it).")
    published_note = ("**Weights: the original authors' checkpoint.** FC-CLIP's authors published the trained "
                      "ConvNeXt-Large model (`fcclip_cocopan.pth`, trained on COCO panoptic, Apache-2.0). This "
                      "card describes it after conversion: every tensor is theirs, renamed for `transformers`; the "
                      "conversion reproduces the original code's outputs (logits within 1e-4 on the reference "
                      "fixtures).")
    citation = """@inproceedings{yu2023fcclip,
  title={Convolutions Die Hard: Open-Vocabulary Panoptic Segmentation with Single Frozen Convolutional CLIP},
  author={Qihang Yu and Ju He and Xueqing Deng and Xiaohui Shen and Liang-Chieh Chen},
  journal={arXiv: 2308.02487},
  year={2023}
}"""

    def summary(self, config: FCCLIPConfig) -> str:
        return (f"An FC-CLIP open-vocabulary segmentation model on a single frozen CLIP {self.clip_variant(config)}, "
                "for `fgaseg_hf` and `transformers`: it segments an image into any classes you name.")

    def rows(self, config: FCCLIPConfig) -> list[tuple[str, str]]:
        rows = [row for row in super().rows(config) if row[0] != "Dominant categories"]
        decoder = (f"masked attention, then self-attention, then FFN: {config.decoder_layers} predictions "
                   f"({config.decoder_layers - 1} layers), width {config.hidden_dim}, "
                   f"{config.num_learned_queries} learned queries")
        return [(name, decoder if name == "Decoder" else value) for name, value in rows]

    def obtain(self, model_ref: str) -> str:
        return f"""Download `fcclip_cocopan.pth` (FC-CLIP ConvNeXt-Large, from the "checkpoint" link of FC-CLIP's README: <{FCCLIP_WEIGHTS_URL}>) and convert it with its config from the FC-CLIP repository (the YAML and its `_BASE_` chain):

```bash
git clone https://github.com/bytedance/fc-clip
fgaseg convert --checkpoint fcclip_cocopan.pth --config fc-clip/{FCCLIP_CONFIG} --output {model_ref}
fgaseg segment street.jpg --labels "sky, road, car, person" --model {model_ref} --output segmented/
```

"""

    def published_results(self, model_ref: str) -> str:
        lines = ["Reported by FC-CLIP's authors in their README (their numbers, not measured with `fgaseg_hf`); "
                 "zero-shot except COCO, the training set:", "",
                 "| Benchmark | PQ | mAP | mIoU | `fgaseg evaluate` key |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {pq} | {ap} | {miou} | {f'`{key}`' if key else '-'} |"
                  for name, pq, ap, miou, key in FCCLIP_PUBLISHED]
        keys = ",".join(key for *_, key in FCCLIP_PUBLISHED if key)
        lines += ["", "To measure the mIoU columns with this package (its test-time resize, shortest edge 800 and "
                  "longest at most 1333, comes from the converted config):", "", "```bash",
                  f"fgaseg evaluate --model {model_ref} --benchmarks {keys} --root datasets --output eval.json",
                  "```", "", "`fgaseg evaluate` prompts each benchmark with FC-CLIP's own synonym lists per dataset, as "
                  "the published numbers were measured (`--class-names plain` gives CAT-Seg's one-name lists "
                  "instead). Panoptic quality (PQ) and mask AP are not computed by `fgaseg_hf`."]
        return "\n".join(lines)

    def fine_tuning(self, source: _Source, base: str, preset_ref: str) -> tuple[str, list[str]]:
        folder = source.model_dir or "path/to/fcclip-convnext-large"
        start = f"""Start from the converted checkpoint (the CLIP stays frozen, the pixel decoder and decoder train; the run's classes join the seen classes):

```python
from fgaseg_hf import FCCLIPModel

model = FCCLIPModel.from_pretrained("{folder}")
```"""
        return start, [f"from_pretrained: {folder}"]

    def limitations(self, config: FCCLIPConfig) -> list[str]:
        return [
            (f"Masks are predicted at 1/{config.common_stride} of the resized input (shortest edge "
             f"{config.min_size_test} px) and upsampled, so thin structures and small objects are coarse; there is "
             "no sliding-window inference."),
            ("Only semantic segmentation is exposed (the original also has panoptic and instance inference)."),
        ]


CATSEG_WEIGHTS_REPO = "hamacojr/CAT-Seg-weights"  # a Hugging Face Space
# ADE20K-150 mIoU reported by CAT-Seg's authors for the released checkpoints: (file, --from-hub name, mIoU).
CATSEG_PUBLISHED = {"ViT-B/16": ("model_base.pth", "catseg-vitb", "31.8"),
                    "ViT-L/14": ("model_large.pth", "catseg-vitl", "37.9")}


class _CATSegFamily(_FGASegFamily):
    """CAT-Seg, FGA-Seg's parent, whose authors published weights (`model_base.pth` / `model_large.pth`, MIT)."""

    model_type = "catseg"
    title = "CAT-Seg"
    config_class = CATSegConfig
    model_class = "CATSegModel"
    tags = ("catseg", "open-vocabulary", "semantic-segmentation", "clip")
    license = "mit"
    example_name = "my-catseg"
    description = (
        "CAT-Seg (Cho et al., CVPR 2024) segments an image into classes named in free text. It correlates dense CLIP "
        "image features with the CLIP text embeddings of every class name, aggregates this cost volume spatially "
        "(shifted-window attention) and across classes (class attention), and upsamples the result with guidance "
        "from intermediate CLIP layers. It is FGA-Seg without the pixel-to-text attention, the local-alignment cost "
        "and the alignment projector; `fgaseg_hf` runs it on FGA-Seg's blocks (`CATSegModel`)."
    )
    trained_note = ("The weights are CAT-Seg's published checkpoint converted with `fgaseg_hf` (or a fine-tuning run "
                    "started from it).")
    published_note = ("**Weights: the original authors' checkpoint.** CAT-Seg's authors published the trained "
                      "models (trained on COCO-Stuff, MIT licence) in the Hugging Face Space "
                      f"`{CATSEG_WEIGHTS_REPO}`. This card describes them after conversion: every tensor is theirs, "
                      "renamed for `transformers`; the conversion reproduces the original code's outputs "
                      "(probabilities within 1e-5 on the reference fixture).")
    citation = """@inproceedings{cho2024cat,
  title={CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation},
  author={Cho, Seokju and Shin, Heeseong and Hong, Sunghwan and Arnab, Anurag and Seo, Paul Hongsuck and Kim, Seungryong},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year={2024}
}"""

    def _published(self, config):
        variant = self.clip_variant(config)
        return CATSEG_PUBLISHED.get(variant, CATSEG_PUBLISHED["ViT-B/16"])

    def obtain(self, model_ref: str) -> str:
        return f"""Download and convert the released weights (Hugging Face Space `{CATSEG_WEIGHTS_REPO}`; `--from-hub` brings the matching original config), then segment a photo:

```bash
fgaseg convert --from-hub {self._hub_name} --output {model_ref}
fgaseg segment street.jpg --labels "sky, road, car, person" --model {model_ref} --output segmented/
```

"""

    def published_results(self, model_ref: str) -> str:
        return "\n".join([
            "Reported by CAT-Seg's authors (their number, not measured with `fgaseg_hf`), zero-shot after training "
            "on COCO-Stuff:", "", "| Benchmark | mIoU | `fgaseg evaluate` key |", "|---|---|---|",
            f"| ADE20K (A-150) | {self._miou} | `ade150` |", "",
            "To measure it with this package (the original's protocol: shortest edge 640, sliding window of 384 px "
            "crops on a 640 px canvas plus the whole image, class-attention pooling 1 x 1):", "", "```bash",
            f"fgaseg evaluate --model {model_ref} --benchmarks ade150 --root datasets --output eval.json", "```",
        ])

    # `obtain` and `published_results` take no config: the renderer asks for the summary first, which records
    # which release the card is about.
    _hub_name, _miou = CATSEG_PUBLISHED["ViT-B/16"][1:]

    def summary(self, config) -> str:
        file, self._hub_name, self._miou = self._published(config)
        return (f"A CAT-Seg open-vocabulary semantic segmentation model on CLIP {self.clip_variant(config)} at "
                f"{config.clip_resolution} px (the authors' `{file}`), for `fgaseg_hf` and `transformers`: it "
                "segments an image into any classes you name.")

    def rows(self, config) -> list[tuple[str, str]]:
        return [row for row in super().rows(config) if row[0] not in ("Fusion", "Decoder mode")]

    def fine_tuning(self, source: _Source, base: str, preset_ref: str) -> tuple[str, list[str]]:
        start = """Continue from the converted weights, as CAT-Seg, or start an FGA-Seg from them (every CAT-Seg tensor copied, FGA-Seg's additions initialised):

```python
from fgaseg_hf.modeling_catseg import fgaseg_from_catseg

fgaseg, report = fgaseg_from_catseg("path/to/catseg-folder")
```"""
        return start, ["from_pretrained: path/to/catseg-folder", "# family: fgaseg   # to train an FGA-Seg from it"]

    def card_name(self, preset: str, config) -> str:
        variant = self.clip_variant(config).lower().replace("vit-", "vit").replace("/", "")
        return f"catseg-{variant}-{config.clip_resolution}"


# FC-CLIP before ITA: an FCCLIPConfig is an ITAConfig too (see `_family_of_config`; a CATSegConfig, an
# FGASegConfig subclass, is found by its exact type first).
FAMILIES: dict[str, _Family] = {
    family.model_type: family for family in (_FGASegFamily(), _CATSegFamily(), _FCCLIPFamily(), _ITAFamily())
}


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
        if type(config) is family.config_class:
            return family
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
    if values.get("model_type") in FAMILIES:
        return FAMILIES[values["model_type"]]
    if isinstance(vision, dict) and "hidden_sizes" in vision:
        return FAMILIES["ita"]
    if all(values.get(name) == value for name, value in CATSEG_SWITCHES.items()):
        return FAMILIES["catseg"]
    return FAMILIES["fgaseg"]


def _load_source(model_dir_or_config: str | os.PathLike | FGASegConfig | ITAConfig) -> _Source:
    """A config, a model folder (with `config.json`), a preset JSON file or a preset name -> `_Source`."""
    if not isinstance(model_dir_or_config, (str, os.PathLike)):
        return _Source(model_dir_or_config, _family_of_config(model_dir_or_config))
    path = str(model_dir_or_config)
    if os.path.isdir(path):
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"{path} has no config.json: not a saved model folder of this package")
        with open(config_file, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
        family = FAMILIES.get(model_type)
        if family is None:
            names = [f.title for f in FAMILIES.values()]
            titles = ", ".join(names[:-1]) + " and " + names[-1]
            raise ValueError(f"{path}: model cards are written for {titles} models only, not {model_type!r}")
        return _Source(family.config_class.from_pretrained(path), family, model_dir=path)
    file = path if os.path.isfile(path) else os.path.join(PRESET_DIR, f"{path}.json")
    if not os.path.isfile(file):
        raise ValueError(f"unknown preset {path!r}; FGA-Seg presets: {available_presets()}, "
                         f"ITA presets: {available_ita_presets()}, FC-CLIP presets: {available_fcclip_presets()}")
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
