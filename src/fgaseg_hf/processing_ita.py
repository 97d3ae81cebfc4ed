"""`ITAProcessor`: the ITA image processor plus a CLIP tokenizer that turns a vocabulary into ITA's text inputs.

The text inputs of a vocabulary (built here, in one place; `ITAModel.build_text_inputs` calls the same function):
* `input_ids` / `attention_mask` `(num_synonyms * num_templates, L)`: every synonym of every class in every prompt
  template, synonym-major (row `s * num_templates + t`), padded to `L` (the text tower's context length);
* `synonym_to_class` `(num_synonyms,)`: each synonym's class id;
* `dominant_input_ids` / `dominant_attention_mask` `(V, L)`: the dominant-category vocabulary, bare synonyms then
  the extra names ("other");
* `seen_classes` `(num_classes,)`: classes sharing a synonym with a training class (weighted by alpha).
A class name lists its synonyms separated by commas ("car, automobile").

Travels with saved models (remote code): imports only its siblings and installed libraries.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature

from .configuration_ita import VILD_TEMPLATES, split_synonyms
from .image_processing_ita import ITAImageProcessor
from .processing_fgaseg import SegmentationProcessor
from .prompt_templates import check_class_names

TEXT_INPUT_NAMES = (
    "input_ids", "attention_mask", "synonym_to_class", "dominant_input_ids", "dominant_attention_mask", "seen_classes",
)


def vocabulary_layout(class_names, prompt_templates, dominant_extra_names=("other",), seen_class_names=()) -> dict:
    """The untokenised text side of a vocabulary: `prompts` (synonym-major), `dominant_names`, `synonym_to_class`
    and `seen_classes` (see the module docs)."""
    synonyms = [split_synonyms(name) for name in class_names]
    flat = [s for group in synonyms for s in group]
    seen = {s for name in seen_class_names for s in split_synonyms(name)}
    return {
        "prompts": [template.format(s) for s in flat for template in prompt_templates],
        "dominant_names": flat + list(dominant_extra_names),
        "synonym_to_class": torch.tensor([c for c, group in enumerate(synonyms) for _ in group], dtype=torch.long),
        "seen_classes": torch.tensor([not seen.isdisjoint(group) for group in synonyms], dtype=torch.bool),
    }


def tokenize_ita_vocabulary(
    tokenizer, class_names, prompt_templates, dominant_extra_names=("other",), seen_class_names=(), max_length=77
) -> dict:
    """ITA's text inputs for `class_names` (the `TEXT_INPUT_NAMES` tensors) plus `dominant_names`."""
    layout = vocabulary_layout(class_names, prompt_templates, dominant_extra_names, seen_class_names)
    options = dict(padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    prompts, names = tokenizer(layout["prompts"], **options), tokenizer(layout["dominant_names"], **options)
    return {
        "input_ids": prompts["input_ids"], "attention_mask": prompts["attention_mask"],
        "synonym_to_class": layout["synonym_to_class"],
        "dominant_input_ids": names["input_ids"], "dominant_attention_mask": names["attention_mask"],
        "seen_classes": layout["seen_classes"], "dominant_names": layout["dominant_names"],
    }


class ITAProcessor(SegmentationProcessor):
    r"""
    Wraps an [`ITAImageProcessor`] and a `CLIPTokenizer`.

    Args:
        image_processor ([`ITAImageProcessor`]): the image processor.
        tokenizer (`CLIPTokenizer`): the CLIP tokenizer of the model's text tower.
        prompt_templates (`list[str]`, *optional*): templates of the text classifier (default: ViLD's 14, as
            `ITAConfig`).
        dominant_extra_names (`list[str]`, *optional*, defaults to `["other"]`): appended to the dominant vocabulary.
        seen_class_names (`list[str]`, *optional*): the training classes (synonyms comma separated).
        max_length (`int`, *optional*): token length of every row (the text tower's context length; default: the
            tokenizer's `model_max_length`).
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(
        self, image_processor=None, tokenizer=None, prompt_templates=None, dominant_extra_names=("other",),
        seen_class_names=None, max_length=None, **kwargs,
    ):
        self.prompt_templates = list(prompt_templates) if prompt_templates is not None else list(VILD_TEMPLATES)
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("prompt_templates must be a non-empty list of strings containing '{}'")
        self.dominant_extra_names = list(dominant_extra_names)
        self.seen_class_names = list(seen_class_names) if seen_class_names is not None else []
        self.max_length = int(max_length) if max_length is not None else None
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, tokenizer, **image_processor_kwargs) -> "ITAProcessor":
        """The processor matching an `ITAConfig`: test size, normalisation, templates, extra names, training classes
        and context length."""
        return cls(
            image_processor=ITAImageProcessor.from_model_config(config, **image_processor_kwargs), tokenizer=tokenizer,
            prompt_templates=config.prompt_templates, dominant_extra_names=config.dominant_extra_names,
            seen_class_names=config.seen_class_names, max_length=config.text_config.max_position_embeddings,
        )

    def _text(self, class_names, templates=None, seen_class_names=None) -> dict:
        names = check_class_names(class_names)
        return tokenize_ita_vocabulary(
            self.tokenizer, names, list(templates) if templates is not None else self.prompt_templates,
            self.dominant_extra_names, self.seen_class_names if seen_class_names is None else list(seen_class_names),
            self.max_length or self.tokenizer.model_max_length,
        )

    def tokenize_vocabulary(self, class_names, templates=None, seen_class_names=None) -> BatchFeature:
        """The text inputs of `ITAModel.forward` for a list of class names (see the module docs)."""
        text = self._text(class_names, templates, seen_class_names)
        return BatchFeature({key: text[key] for key in TEXT_INPUT_NAMES})

    def dominant_names(self, class_names) -> list[str]:
        """The dominant-category vocabulary of `class_names` (rows of `dominant_input_ids`)."""
        return vocabulary_layout(check_class_names(class_names), self.prompt_templates, self.dominant_extra_names)["dominant_names"]

    @property
    def model_input_names(self):
        return ["pixel_values", "pixel_mask", *TEXT_INPUT_NAMES]


__all__ = ["TEXT_INPUT_NAMES", "ITAProcessor", "tokenize_ita_vocabulary", "vocabulary_layout"]
