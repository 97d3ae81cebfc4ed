"""The "open-vocabulary-segmentation" pipeline: an image and any list of class names -> one mask per class present.

Saved with every model folder (`config.json` -> `custom_pipelines`), so that
`pipeline(model=folder, trust_remote_code=True)` builds it. Travels as remote code: imports only its siblings and
installed libraries.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForSemanticSegmentation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .image_processing_fgaseg import image_size
from .processing_fgaseg import FGASegProcessor
from .prompt_templates import check_class_names, parse_label_list, resolve_templates

TASK = "open-vocabulary-segmentation"
_TEXT_CACHE_SIZE = 8


def load_pipeline_image(image, timeout=None):
    """Paths and URLs are opened (EXIF orientation applied); PIL images, arrays and tensors pass through."""
    if isinstance(image, str):
        from transformers.image_utils import load_image

        return load_image(image, timeout=timeout)
    return image


def default_class_names(config) -> list[str]:
    """The vocabulary a model carries (`set_default_vocabulary`); `ValueError` when it has none."""
    if not getattr(config, "has_default_vocabulary", False):
        raise ValueError("candidate_labels is required: this model has no default vocabulary")
    return [config.id2label[i] for i in range(len(config.id2label))]


class OpenVocabularySegmentationPipeline(Pipeline):
    """
    Open-vocabulary semantic segmentation with FGA-Seg:

    ```python
    >>> segmenter = pipeline(model="path/to/fgaseg-folder", trust_remote_code=True)
    >>> segmenter("street.jpg", candidate_labels=["sky", "road", "car"])
    [{'label': 'sky', 'score': 0.71, 'mask': <PIL.Image.Image mode=L>}, ...]
    ```

    `candidate_labels`: a list of class names, or one string separated by commas (by semicolons if a name holds
    commas); default: the model's own vocabulary. `templates`: prompt templates for this call (as many as the
    model's). `sliding_window=True`: the original's sliding-window inference. Text embeddings of a vocabulary are
    computed once and reused by later calls.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._text_cache: OrderedDict = OrderedDict()

    def _sanitize_parameters(self, sliding_window=None, timeout=None, **kwargs):
        preprocess, postprocess = {}, {}
        # Called with the call's arguments, and once without any at construction (no vocabulary to check then).
        if "candidate_labels" in kwargs or "templates" in kwargs:
            preprocess["vocabulary"] = self._vocabulary(kwargs.pop("candidate_labels", None), kwargs.pop("templates", None))
        if kwargs:
            raise TypeError(f"unexpected arguments for {TASK}: {sorted(kwargs)}")
        if sliding_window is not None:
            preprocess["sliding_window"] = postprocess["sliding_window"] = bool(sliding_window)
        if timeout is not None:
            preprocess["timeout"] = timeout
        return preprocess, {}, postprocess

    def __call__(self, images, candidate_labels=None, **kwargs):
        """Segment one image (path, URL, PIL image, array or tensor) or a list of them; returns, per image, a list
        of `{"label", "score", "mask"}` for every class present (`score`: the class's mean probability over its
        mask; `mask`: a PIL "L" image, 255 inside)."""
        return super().__call__(images, candidate_labels=candidate_labels, **kwargs)

    # ----------------------------------------------------------------- vocabulary
    def _vocabulary(self, candidate_labels, templates) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        if candidate_labels is None:
            names = default_class_names(self.model.config)
        elif isinstance(candidate_labels, str):
            names = parse_label_list(candidate_labels)
        else:
            names = check_class_names(candidate_labels)
        templates = tuple(resolve_templates(templates)) if templates is not None else None
        return tuple(names), templates

    def _text_embeddings(self, vocabulary) -> torch.Tensor:
        names, templates = vocabulary
        if vocabulary in self._text_cache:
            self._text_cache.move_to_end(vocabulary)
            return self._text_cache[vocabulary]
        if templates is None:
            templates = tuple(resolve_templates(self.model.config.prompt_templates))
        # The model checks that the number of templates is the one it was built for.
        processor = FGASegProcessor(self.image_processor, self.tokenizer, prompt_templates=list(templates))
        input_ids = processor.tokenize_vocabulary(list(names))["input_ids"]
        with torch.no_grad():
            embeds = self.model.get_text_embeddings(input_ids.to(self.device))
        self._text_cache[vocabulary] = embeds
        if len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return embeds

    # ----------------------------------------------------------------- steps
    def preprocess(self, image, vocabulary=None, sliding_window=False, timeout=None):
        vocabulary = vocabulary or self._vocabulary(None, None)
        image = load_pipeline_image(image, timeout)
        inputs = self.image_processor(image, do_sliding_window=sliding_window, return_tensors="pt")
        pixel_values = inputs["pixel_values"]
        if sliding_window:
            pixel_values = pixel_values[None]  # (1, V, 3, S, S): the views of one image stay one batch item
        return {"pixel_values": pixel_values, "target_size": [image_size(image)], "vocabulary": [vocabulary]}

    def _forward(self, model_inputs):
        target_size = model_inputs.pop("target_size")
        vocabularies = model_inputs.pop("vocabulary")
        flat = [v[0] if isinstance(v, list) else v for v in vocabularies]
        pixel_values = model_inputs["pixel_values"]
        groups = None
        if pixel_values.dim() == 5:
            batch, views = pixel_values.shape[:2]
            pixel_values = pixel_values.flatten(0, 1)
            groups = torch.arange(batch, device=pixel_values.device).repeat_interleave(views)
        outputs = self.model(
            pixel_values=pixel_values, text_embeds=self._text_embeddings(flat[0]), pruning_groups=groups
        )
        logits = outputs.logits
        if groups is not None:
            logits = logits.unflatten(0, (batch, views))
        return {"logits": logits, "target_size": target_size, "vocabulary": vocabularies}

    def postprocess(self, model_outputs, sliding_window=False):
        logits = model_outputs["logits"]
        if sliding_window:
            logits = logits[0]
        names = model_outputs["vocabulary"][0][0]
        result = self.image_processor.post_process_panoptic_segmentation(
            {"logits": logits}, target_sizes=model_outputs["target_size"], do_sliding_window=sliding_window
        )[0]
        segmentation = result["segmentation"].cpu().numpy()
        return [
            {
                "label": names[segment["label_id"]],
                "score": segment["score"],
                "mask": Image.fromarray(((segmentation == segment["id"]) * 255).astype(np.uint8), mode="L"),
            }
            for segment in result["segments_info"]
        ]


def register_pipelines() -> None:
    """Register the task with transformers (done on `import fgaseg_hf`)."""
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=OpenVocabularySegmentationPipeline, pt_model=AutoModelForSemanticSegmentation, type="multimodal"
    )


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` block a saved `config.json` carries."""
    return {
        TASK: {
            "impl": f"{__name__.split('.')[-1]}.{OpenVocabularySegmentationPipeline.__name__}",
            "pt": ["AutoModelForSemanticSegmentation"],
            "type": "multimodal",
        }
    }


__all__ = ["OpenVocabularySegmentationPipeline", "custom_pipelines_entry", "default_class_names", "register_pipelines"]
