"""`FGASegProcessor`: the image processor plus a CLIP tokenizer that turns class names into prompt token ids.

Travels with saved models (remote code): imports only its siblings and installed libraries.
"""

from __future__ import annotations

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_fgaseg import FGASegImageProcessor
from .prompt_templates import build_prompts, check_class_names, parse_label_list, resolve_templates


def tokenize_vocabulary(tokenizer, class_names, templates, return_tensors: str = "pt") -> BatchFeature:
    """Prompts of every class in every template (names cut at their first ", "), tokenised: `input_ids` and
    `attention_mask` of shape `(num_classes, num_templates, sequence_length)`, padded to the longest prompt."""
    names = check_class_names(class_names)
    templates = resolve_templates(templates)
    encoded = tokenizer(build_prompts(names, templates), padding=True, truncation=True, return_tensors=return_tensors)
    shape = (len(names), len(templates), -1)
    return BatchFeature({key: encoded[key].reshape(shape) for key in ("input_ids", "attention_mask")})


class SegmentationProcessor(ProcessorMixin):
    """What FGA-Seg's and ITA's processors share: images and/or class names in one call, and the image processor's
    post-processing. Subclasses define `tokenize_vocabulary(class_names, templates)`."""

    def __call__(self, images=None, text=None, segmentation_maps=None, templates=None, **image_kwargs) -> BatchFeature:
        """
        Args:
            images: image(s) for the image processor's `preprocess`.
            text (`list[str]` or `str`): class names (the vocabulary of this call): a list, or one string separated
                by commas (by semicolons when a name holds commas), as the pipeline and `fgaseg segment` accept.
            segmentation_maps: optional label maps, turned into training targets by the image processor.
            templates: prompt templates for this call (default: the processor's).
            image_kwargs: options of the image processor's `preprocess`.
        Returns:
            `BatchFeature` with the image inputs and/or the text inputs of the model.
        """
        if images is None and text is None:
            raise ValueError("give images, text (a list of class names), or both")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, segmentation_maps=segmentation_maps, **image_kwargs))
        elif segmentation_maps is not None:
            raise ValueError("segmentation_maps need their images")
        if text is not None:
            data.update(self.tokenize_vocabulary(parse_label_list(text) if isinstance(text, str) else text, templates))
        return BatchFeature(data)

    def post_process_semantic_segmentation(self, *args, **kwargs):
        """See the image processor's `post_process_semantic_segmentation`."""
        return self.image_processor.post_process_semantic_segmentation(*args, **kwargs)

    def post_process_panoptic_segmentation(self, *args, **kwargs):
        """See the image processor's `post_process_panoptic_segmentation`."""
        return self.image_processor.post_process_panoptic_segmentation(*args, **kwargs)

    def post_process_probabilities(self, *args, **kwargs):
        """See the image processor's `post_process_probabilities`."""
        return self.image_processor.post_process_probabilities(*args, **kwargs)


class FGASegProcessor(SegmentationProcessor):
    r"""
    Wraps an [`FGASegImageProcessor`] and a `CLIPTokenizer`.

    Class names become prompts with the templates (`prompt_templates`: "single", "imagenet", "imagenet_select" or a
    list of strings with `{}`). A name holding synonyms separated by ", " ("chest of drawers, chest, bureau") is
    prompted with its first synonym only, as the original does.

    Args:
        image_processor ([`FGASegImageProcessor`]): the image processor.
        tokenizer (`CLIPTokenizer`): the CLIP tokenizer of the model's text tower.
        prompt_templates (`str` or `list[str]`, *optional*, defaults to "single"): must have as many templates as
            the model's `config.prompt_templates`.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, prompt_templates="single", **kwargs):
        self.prompt_templates = resolve_templates(prompt_templates)
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, tokenizer, **image_processor_kwargs) -> "FGASegProcessor":
        """The processor matching an `FGASegConfig`: its resolution, decoder and prompt templates."""
        image_processor = FGASegImageProcessor.from_model_config(config, **image_processor_kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, prompt_templates=config.prompt_templates)

    def tokenize_vocabulary(self, class_names, templates=None, return_tensors: str = "pt") -> BatchFeature:
        """`input_ids` and `attention_mask` of shape `(num_classes, num_templates, sequence_length)` (padded to the
        longest prompt) for a list of class names."""
        return tokenize_vocabulary(self.tokenizer, class_names, templates or self.prompt_templates, return_tensors)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["FGASegProcessor", "SegmentationProcessor", "tokenize_vocabulary"]
