"""The "open-vocabulary-segmentation" pipeline: an image and any list of class names -> one mask per class present,
for FGA-Seg and ITA models (the model-specific parts sit behind a small interface; see the class docs).

Saved with every model folder (`config.json` -> `custom_pipelines`), so that
`pipeline(model=folder, trust_remote_code=True)` builds it. Travels as remote code: imports only its siblings and
installed libraries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForSemanticSegmentation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .image_processing_fgaseg import image_size
from .prompt_templates import check_class_names, parse_label_list, resolve_templates

TASK = "open-vocabulary-segmentation"
_TEXT_CACHE_SIZE = 8
logger = logging.get_logger(__name__)


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


def warn_unlearned_names(config, names) -> list[str]:
    """A model whose config says `closed_vocabulary: true` (trained on its `id2label` classes only, e.g. the demo
    model's text tower learnt from scratch) cannot know other names: warn once about them; returns them."""
    if not getattr(config, "closed_vocabulary", False):
        return []
    known = set(config.id2label.values())
    unknown = [name for name in names if name not in known]
    if unknown:
        logger.warning_once(
            f"this model has a closed vocabulary (it was trained on {', '.join(config.id2label[i] for i in range(len(config.id2label)))} "
            f"only): it never learnt {', '.join(repr(n) for n in unknown)}, so their masks are meaningless"
        )
    return unknown


def has_sliding_window(image_processor) -> bool:
    """Whether a model family has the original's sliding-window inference (FGA-Seg's image processor; ITA's has
    none)."""
    return hasattr(image_processor, "do_sliding_window")


class OpenVocabularySegmentationPipeline(Pipeline):
    """
    Open-vocabulary semantic segmentation with FGA-Seg or ITA:

    ```python
    >>> segmenter = pipeline(model="path/to/model-folder", trust_remote_code=True)
    >>> segmenter("street.jpg", candidate_labels=["sky", "road", "car"])
    [{'label': 'sky', 'score': 0.71, 'mask': <PIL.Image.Image mode=L>}, ...]
    ```

    `candidate_labels`: a list of class names, or one string separated by commas (by semicolons if a name holds
    commas); default: the model's own vocabulary. `templates`: prompt templates for this call (FGA-Seg: as many as
    the model's). `sliding_window=True`: the original's sliding-window inference (FGA-Seg only; default: the image
    processor's `do_sliding_window`). The text side of a
    vocabulary is encoded once and reused by later calls.

    What the pipeline needs from a model family (no model type is named here):
    * `model.encode_vocabulary(tokenizer, class_names, templates=None) -> dict` of tensors that
      `model(**image_inputs, **encoded)` accepts (FGA-Seg: `text_embeds`; ITA: classifier and dominant-vocabulary
      embeddings);
    * the image processor: `__call__(image, return_tensors="pt")` giving `model_input_names`, optional
      `collate(items)` (merges separately preprocessed images, e.g. of different sizes), optional
      `post_process_input_names` (the output fields its post-processing reads; default `logits`) and
      `post_process_panoptic_segmentation(outputs, target_sizes=...)` (one segment per class present);
      sliding-window inference is available when the image processor has `do_sliding_window`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._text_cache: OrderedDict = OrderedDict()
        # One pipeline may serve several threads: the LRU order and the tokenizer (whose fast backend keeps
        # per-call padding state) are used under this lock.
        self._text_cache_lock = threading.Lock()

    @property
    def supports_sliding_window(self) -> bool:
        return has_sliding_window(self.image_processor)

    def _sanitize_parameters(self, sliding_window=None, timeout=None, **kwargs):
        preprocess, postprocess = {}, {}
        # Called with the call's arguments, and once without any at construction (no vocabulary to check then).
        if "candidate_labels" in kwargs or "templates" in kwargs:
            preprocess["vocabulary"] = self._vocabulary(kwargs.pop("candidate_labels", None), kwargs.pop("templates", None))
        if kwargs:
            raise TypeError(f"unexpected arguments for {TASK}: {sorted(kwargs)}")
        if sliding_window and not self.supports_sliding_window:
            raise ValueError(
                f"sliding_window=True is only available for FGA-Seg models; this {type(self.model).__name__} "
                f"(model_type {getattr(self.model.config, 'model_type', None)!r}) has no sliding-window inference"
            )
        if sliding_window is None:  # the image processor's setting (a model folder may default to the window)
            sliding_window = getattr(self.image_processor, "do_sliding_window", False)
        preprocess["sliding_window"] = postprocess["sliding_window"] = bool(sliding_window)
        if timeout is not None:
            preprocess["timeout"] = timeout
        return preprocess, {}, postprocess

    def __call__(self, images, candidate_labels=None, **kwargs):
        """Segment one image (path, URL, PIL image, array or tensor) or a list of them; returns, per image, a list
        of `{"label", "score", "mask"}` for every class present (`score`: the class's mean probability (FGA-Seg) or
        mean semantic score (ITA) over its mask; `mask`: a PIL "L" image, 255 inside)."""
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
        warn_unlearned_names(self.model.config, names)
        return tuple(names), templates

    def _encoded_vocabulary(self, vocabulary) -> dict:
        """The model's encoded vocabulary, cached per (names, templates) (thread-safe)."""
        with self._text_cache_lock:
            encoded = self._text_cache.get(vocabulary)
            if encoded is not None:
                self._text_cache.move_to_end(vocabulary)
                return encoded
            names, templates = vocabulary
            templates = list(templates) if templates is not None else None
            with torch.no_grad():
                encoded = self.model.encode_vocabulary(self.tokenizer, list(names), templates=templates)
            self._text_cache[vocabulary] = encoded
            while len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
            return encoded

    # ----------------------------------------------------------------- steps
    def preprocess(self, image, vocabulary=None, sliding_window=False, timeout=None):
        vocabulary = vocabulary or self._vocabulary(None, None)
        image = load_pipeline_image(image, timeout)
        options = {"do_sliding_window": sliding_window} if self.supports_sliding_window else {}
        processed = self.image_processor(image, return_tensors="pt", **options)
        inputs = {key: processed[key] for key in self.image_processor.model_input_names if key in processed}
        if sliding_window:
            # (1, V, 3, S, S): the views of one image stay one batch item.
            inputs["pixel_values"] = inputs["pixel_values"][None]
        # In a list, so that batching leaves the per-image inputs alone (images may differ in size); `_forward`
        # merges them.
        return {"image_inputs": [inputs], "target_size": [image_size(image)], "vocabulary": [vocabulary]}

    def _collate(self, items: list[dict]) -> dict:
        collate = getattr(self.image_processor, "collate", None)
        if collate is not None and len(items) > 1:
            return collate(items)
        return {key: torch.cat([item[key] for item in items]) for key in items[0]}

    def _forward(self, model_inputs):
        target_size = model_inputs.pop("target_size")
        vocabularies = model_inputs.pop("vocabulary")
        flat = [v[0] if isinstance(v, list) else v for v in vocabularies]
        # One image: [inputs]; a batch: [[inputs], [inputs], ...].
        items = [item[0] if isinstance(item, list) else item for item in model_inputs.pop("image_inputs")]
        inputs = self._collate(items)
        groups = None
        pixel_values = inputs["pixel_values"]
        if pixel_values.dim() == 5:
            batch, views = pixel_values.shape[:2]
            inputs["pixel_values"] = pixel_values.flatten(0, 1)
            groups = torch.arange(batch, device=pixel_values.device).repeat_interleave(views)
            inputs["pruning_groups"] = groups
        dtype = self.model.dtype
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        outputs = self.model(**inputs, **self._encoded_vocabulary(flat[0]))
        kept = {}
        for name in getattr(self.image_processor, "post_process_input_names", ("logits",)):
            value = outputs.get(name) if hasattr(outputs, "get") else getattr(outputs, name, None)
            if isinstance(value, (list, tuple)):
                value = torch.tensor(value)  # e.g. image sizes: one row per image, so that batches split
            if value is not None:
                kept[name] = value
        if groups is not None:
            kept["logits"] = kept["logits"].unflatten(0, (batch, views))
        return {**kept, "target_size": target_size, "vocabulary": vocabularies}

    def postprocess(self, model_outputs, sliding_window=False):
        names = model_outputs["vocabulary"][0][0]
        fields = getattr(self.image_processor, "post_process_input_names", ("logits",))
        outputs = {name: model_outputs[name] for name in fields if name in model_outputs}
        options = {}
        if sliding_window:
            outputs["logits"] = outputs["logits"][0]
            options["do_sliding_window"] = True
        elif self.supports_sliding_window:
            options["do_sliding_window"] = False
        result = self.image_processor.post_process_panoptic_segmentation(
            outputs, target_sizes=model_outputs["target_size"], **options
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


def add_pipelines_to_saved_model(save_directory) -> None:
    """After `save_pretrained` with remote code: map AutoModelForSemanticSegmentation to the model's class in
    `config.json`'s `auto_map` (a class carries one auto class; the image-segmentation pipeline looks this one up) and
    save this pipeline (`custom_pipelines`) with its code, so that `pipeline(model=folder, trust_remote_code=True)`
    finds it. A folder without remote code (no `auto_map`) is left alone."""
    import json
    import os

    from transformers.dynamic_module_utils import custom_object_save

    config_file = os.path.join(save_directory, "config.json")
    with open(config_file, encoding="utf-8") as handle:
        data = json.load(handle)
    auto_map = data.get("auto_map")
    if not auto_map or "AutoModel" not in auto_map:
        return
    auto_map.setdefault("AutoModelForSemanticSegmentation", auto_map["AutoModel"])
    data["custom_pipelines"] = custom_pipelines_entry()
    custom_object_save(OpenVocabularySegmentationPipeline, save_directory)
    with open(config_file, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


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


__all__ = [
    "OpenVocabularySegmentationPipeline", "add_pipelines_to_saved_model", "custom_pipelines_entry", "has_sliding_window", "default_class_names",
    "register_pipelines", "warn_unlearned_names",
]
