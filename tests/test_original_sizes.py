"""`original_sizes`: the image processors record each input image's size, the models pass it on to their outputs, and
the post-processing returns maps at the input images' sizes by default (sliding window included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, tiny_processor, tiny_tokenizer
from PIL import Image
from test_modeling_ita import make_ita

from fgaseg_hf import ITAProcessor

NAMES = ["sky", "road", "car", "tree"]
SIZES = [(45, 70), (80, 33)]
IMAGES = [
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))
    for seed, size in zip((3, 4), SIZES)
]


def _assert_defaults_equal_explicit_sizes(processor, outputs, sizes, **options):
    for name in ("post_process_semantic_segmentation", "post_process_probabilities"):
        method = getattr(processor, name)
        default, explicit = method(outputs, **options), method(outputs, target_sizes=sizes, **options)
        assert len(default) == len(sizes)
        for got, want, size in zip(default, explicit, sizes):
            assert tuple(got.shape[-2:]) == size
            assert torch.equal(got, want)
    default = processor.post_process_panoptic_segmentation(outputs, **options)
    explicit = processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **options)
    for got, want in zip(default, explicit):
        assert torch.equal(got["segmentation"], want["segmentation"]) and got["segments_info"] == want["segments_info"]


FGASEG_SETTINGS = {
    "default": {},
    "original": {"processing_mode": "original"},
    "sliding_window": {"do_sliding_window": True, "sliding_window_canvas": [96, 128]},
    "sliding_window_original": {
        "processing_mode": "original", "do_sliding_window": True, "sliding_window_canvas": [96, 128],
    },
}


@pytest.fixture(scope="module")
def fgaseg_model():
    return make_model(decoder_mode="fast")


@pytest.mark.parametrize("setting", list(FGASEG_SETTINGS))
def test_fgaseg_post_processing_defaults_to_the_input_image_sizes(fgaseg_model, setting):
    processor = tiny_processor(fgaseg_model.config, **FGASEG_SETTINGS[setting])
    inputs = processor(images=IMAGES, text=NAMES)
    assert inputs["original_sizes"].tolist() == [list(size) for size in SIZES]
    with torch.no_grad():
        outputs = fgaseg_model(**inputs)
    assert torch.equal(outputs.original_sizes, inputs["original_sizes"])
    sliding = "sliding" in setting
    views = processor.image_processor.num_views_per_image() if sliding else 1
    assert outputs.logits.shape[0] == len(SIZES) * views
    _assert_defaults_equal_explicit_sizes(processor, outputs, SIZES)
    # The default reads the field of any output holding it (a dict too, e.g. what a pipeline keeps).
    as_dict = {"logits": outputs.logits, "original_sizes": outputs.original_sizes.numpy()}
    for got, want in zip(processor.post_process_semantic_segmentation(as_dict),
                         processor.post_process_semantic_segmentation(outputs, target_sizes=SIZES)):
        assert torch.equal(got, want)

    # Without `original_sizes` (outputs of a call given `pixel_values` only): the maps come at the model's output
    # resolution, or at the sliding-window canvas, as before.
    with torch.no_grad():
        bare = fgaseg_model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                            pruning_groups=inputs.get("pruning_groups"))
    assert bare.original_sizes is None
    native = tuple(processor.image_processor.sliding_window_canvas) if sliding else tuple(bare.logits.shape[-2:])
    for got, want in zip(processor.post_process_semantic_segmentation(bare),
                         processor.post_process_semantic_segmentation(bare, target_sizes=[native] * len(SIZES))):
        assert tuple(got.shape) == native and torch.equal(got, want)


def test_fgaseg_original_sizes_in_numpy_and_through_a_tuple_output(fgaseg_model):
    processor = tiny_processor(fgaseg_model.config)
    arrays = processor.image_processor(IMAGES, return_tensors="np")
    assert isinstance(arrays["original_sizes"], np.ndarray) and arrays["original_sizes"].tolist() == [list(s) for s in SIZES]
    inputs = processor(images=IMAGES, text=NAMES)
    with torch.no_grad():
        as_tuple = fgaseg_model(**inputs, return_dict=False)
    # The field comes last, after the other outputs.
    assert torch.equal(as_tuple[-1], inputs["original_sizes"])


@pytest.mark.parametrize("order", ["after", "before"])
def test_ita_post_processing_defaults_to_the_input_image_sizes(order):
    model = make_ita(min_size_test=48, max_size_test=96)
    model.config.postprocess_order = order
    processor = ITAProcessor.from_model_config(model.config, tiny_tokenizer())
    inputs = processor(images=IMAGES, text=NAMES)
    assert inputs["original_sizes"].tolist() == [list(size) for size in SIZES]
    with torch.no_grad():
        outputs = model(**inputs)
    assert torch.equal(outputs.original_sizes, inputs["original_sizes"])
    assert outputs.image_sizes == [(48, 75), (96, 40)]  # the resized images on the canvas
    _assert_defaults_equal_explicit_sizes(processor, outputs, SIZES)
    for got, want, size in zip(model.post_process_semantic_segmentation(outputs),
                               model.post_process_semantic_segmentation(outputs, target_sizes=SIZES), SIZES):
        assert tuple(got.shape) == size and torch.equal(got, want)

    # Without `original_sizes`: each image's size on the canvas, as before.
    with torch.no_grad():
        bare = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    assert bare.original_sizes is None
    canvas_sizes = [(48, 75), (96, 40)]
    for got, want, size in zip(processor.post_process_semantic_segmentation(bare),
                               processor.post_process_semantic_segmentation(bare, target_sizes=canvas_sizes), canvas_sizes):
        assert tuple(got.shape) == size and torch.equal(got, want)
