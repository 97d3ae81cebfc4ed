"""FGASegImageProcessor and FGASegProcessor: input conversion, labels, geometry, post-processing, saving."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model, tiny_config, tiny_processor, tiny_tokenizer
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

from fgaseg_hf import FGASegImageProcessor, FGASegProcessor
from fgaseg_hf.fgaseg_decoder import PRUNED_LOGIT
from fgaseg_hf.image_processing_fgaseg import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    bilinear_matrix,
    image_size,
    resized_argmax,
    to_rgb_array,
    window_starts,
)
from fgaseg_hf.prompt_templates import IMAGENET_SELECT_TEMPLATES, IMAGENET_TEMPLATES, parse_label_list

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1) * 255
STD = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1) * 255


def processor(**kwargs) -> FGASegImageProcessor:
    return FGASegImageProcessor(image_size=64, **kwargs)


# ----------------------------------------------------------------------------- input conversion
@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.fromarray(RGB), RGB),
        (RGB, RGB),
        (torch.from_numpy(RGB).permute(2, 0, 1), RGB),  # (C, H, W) tensor
        (RGB.astype(np.float32) / 255.0, RGB),  # float in [0, 1]
        (torch.from_numpy(RGB).permute(2, 0, 1).float(), RGB),  # float on the 0..255 scale
        (Image.fromarray(RGB[:, :, 0]), np.repeat(RGB[:, :, :1], 3, axis=2)),  # L
        (Image.fromarray(np.dstack([RGB, RGB[:, :, :1]])), RGB),  # RGBA: alpha dropped
        (Image.fromarray(np.dstack([RGB[:, :, 0], RGB[:, :, 1]])), np.repeat(RGB[:, :, :1], 3, axis=2)),  # LA
        (RGB[:, :, 0].astype(np.uint16) * 257, np.repeat(RGB[:, :, :1], 3, axis=2)),  # 16-bit grey
        (RGB[:, :, :1] > 127, np.repeat((RGB[:, :, :1] > 127) * 255, 3, axis=2)),  # boolean
    ],
    ids=["pil-rgb", "numpy-hwc", "tensor-chw", "float01", "float255", "L", "RGBA", "LA", "uint16", "bool"],
)
def test_every_common_input_becomes_the_same_rgb(image, expected):
    assert np.array_equal(to_rgb_array(image), expected.astype(np.float32))


def test_pil_modes_palette_cmyk_and_16bit_png():
    palette = Image.fromarray(RGB).quantize(colors=16)
    assert np.array_equal(to_rgb_array(palette), np.asarray(palette.convert("RGB"), dtype=np.float32))
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert np.array_equal(to_rgb_array(cmyk), np.asarray(cmyk.convert("RGB"), dtype=np.float32))
    # A 16-bit PNG read back from disk (Pillow opens it as "I;16" or "I"): 0..65535 maps onto 0..255.
    grey16 = (RGB[:, :, 0].astype(np.uint16) * 257)
    buffer = io.BytesIO()
    Image.fromarray(grey16).save(buffer, format="PNG")
    reopened = Image.open(io.BytesIO(buffer.getvalue()))
    assert reopened.mode in ("I;16", "I")
    assert np.array_equal(to_rgb_array(reopened)[:, :, 1], RGB[:, :, 0].astype(np.float32))


def test_exif_orientation_is_respected():
    # Orientation 6: the stored pixels must be rotated 90 degrees clockwise for display.
    stored = np.zeros((20, 30, 3), dtype=np.uint8)
    stored[:, :15] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", exif=exif, quality=95)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image_size(image) == (30, 20)
    upright = to_rgb_array(image)
    assert upright.shape == (30, 20, 3)
    assert upright[2, 10, 0] > 200 and upright[-3, 10, 0] < 60  # red now on top


def test_normalisation_and_resize_are_clip_and_antialiased_bilinear():
    out = processor()(RGB)["pixel_values"]
    image = torch.from_numpy(RGB).permute(2, 0, 1).float()
    expected = F.interpolate(((image - MEAN) / STD)[None], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)
    constant = processor()(np.full((100, 90, 3), 200, np.uint8))["pixel_values"]
    assert torch.allclose(constant, ((torch.full((3, 1, 1), 200.0) - MEAN) / STD).expand(1, 3, 64, 64), atol=1e-5)


def test_default_mode_never_depends_on_the_batch():
    other = RNG.integers(0, 256, (77, 51, 3), dtype=np.uint8)
    both = processor()([RGB, other])["pixel_values"]
    assert torch.equal(both[0], processor()(RGB)["pixel_values"][0])
    assert torch.equal(both[1], processor()(other)["pixel_values"][0])


def test_original_mode_pads_the_normalised_batch_to_a_multiple_of_32_then_squashes():
    other = RNG.integers(0, 256, (50, 20, 3), dtype=np.uint8)
    out = processor(processing_mode="original")([RGB, other])["pixel_values"]
    canvas = torch.zeros(2, 3, 64, 64)  # max (50, 40) -> (64, 64)
    canvas[0, :, :30, :40] = (torch.from_numpy(RGB).permute(2, 0, 1).float() - MEAN) / STD
    canvas[1, :, :50, :20] = (torch.from_numpy(other).permute(2, 0, 1).float() - MEAN) / STD
    assert torch.equal(out, F.interpolate(canvas, size=(64, 64), mode="bilinear", align_corners=False))


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((0, 10, 3), np.uint8), ValueError, "zero size"),
        (np.zeros((10, 10, 5), np.uint8), ValueError, "channel axis"),
        (np.full((4, 4, 3), np.nan, np.float32), ValueError, "NaN"),
        ("not an image", TypeError, "PIL images, numpy arrays or torch tensors"),
        (np.zeros((4, 4, 3), np.int32) - 1, ValueError, "integer images"),
    ],
)
def test_bad_images_raise_typed_errors_naming_the_problem(bad, error, message):
    with pytest.raises(error, match=message):
        processor()(bad)


def test_unknown_arguments_and_settings_are_rejected():
    with pytest.raises(TypeError):
        processor()(RGB, candidate_labels=["a"])
    with pytest.raises(ValueError, match="processing_mode"):
        processor(processing_mode="faithful")
    with pytest.raises(ValueError, match="sliding_window_canvas"):
        processor(do_sliding_window=True, sliding_window_canvas=[32, 32])


# ----------------------------------------------------------------------------- labels
def test_segmentation_maps_become_labels_with_reduce_and_ignore():
    label = RNG.integers(0, 6, (30, 40)).astype(np.uint8)
    label[0, 0] = 255
    out = processor()(RGB, segmentation_maps=Image.fromarray(label))["labels"]
    expected = F.interpolate(torch.from_numpy(label)[None, None].float(), size=(64, 64), mode="nearest-exact")[0].long()
    assert out.dtype == torch.long and torch.equal(out, expected)
    reduced = processor(do_reduce_labels=True)(RGB, segmentation_maps=label)["labels"]
    mapping = {0: 255, 255: 255, **{v: v - 1 for v in range(1, 6)}}
    assert torch.equal(reduced, expected.apply_(lambda v: mapping[v]))
    padded = processor(processing_mode="original")(RGB, segmentation_maps=label)["labels"]
    assert padded.shape == (1, 32, 64)  # the padded canvas; the original does not resize labels
    assert torch.equal(padded[0, :30, :40], torch.from_numpy(label).long())
    assert bool((padded[0, 30:] == 255).all()) and bool((padded[0, :, 40:] == 255).all())


def test_label_errors():
    with pytest.raises(ValueError, match="segmentation map 0 has size"):
        processor()(RGB, segmentation_maps=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        processor()(RGB, segmentation_maps=Image.fromarray(RGB))
    with pytest.raises(ValueError, match="2 segmentation maps"):
        processor()(RGB, segmentation_maps=[RGB[:, :, 0], RGB[:, :, 0]])


# ----------------------------------------------------------------------------- geometry and post-processing
@pytest.mark.parametrize("out_size, in_size", [(96, 24), (7, 24), (24, 24), (1, 5), (300, 96)])
def test_bilinear_matrix_matches_interpolate(out_size, in_size):
    x = torch.randn(3, in_size)
    expected = F.interpolate(x[None], size=out_size, mode="linear", align_corners=False)[0]
    assert torch.allclose(x @ bilinear_matrix(out_size, in_size).T, expected, atol=1e-5)


def test_resized_argmax_matches_full_interpolation_and_handles_large_sizes(monkeypatch):
    maps = torch.rand(5, 12, 12, generator=torch.Generator().manual_seed(0))
    full = F.interpolate(maps[None], size=(301, 457), mode="bilinear", align_corners=False)[0]
    import fgaseg_hf.image_processing_fgaseg as module

    monkeypatch.setattr(module, "_BAND_ELEMENTS", 5 * 457 * 16)  # force several bands
    labels, sums = resized_argmax(maps, (301, 457))
    # Equal up to float rounding (~1e-6): compare wherever the two best classes are further apart than that.
    top2 = full.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], full.argmax(dim=0)[clear])
    best = full.max(dim=0).values
    expected = torch.zeros(5, dtype=torch.float64).index_add_(0, labels.flatten(), best.flatten().double())
    assert torch.allclose(sums, expected, rtol=1e-5)


def test_resized_argmax_skips_classes_that_cannot_win_without_changing_the_result():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(9, 10, 14, generator=generator) * 0.5 + 0.4
    maps[[1, 4, 7]] = torch.sigmoid(torch.tensor(-100.0))  # pruned classes: flat at the lowest probability
    maps[5] = 0.39  # below every value of the others: never the best
    maps[6] = torch.rand(10, 14, generator=generator) * 0.2 + 0.35  # mostly below, but wins in one corner
    maps[6, 0, 0] = 0.99
    full = F.interpolate(maps[None], size=(41, 53), mode="bilinear", align_corners=False)[0]
    labels, sums = resized_argmax(maps, (41, 53))
    top2 = full.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5
    assert torch.equal(labels[clear], full.argmax(dim=0)[clear])
    assert set(labels.unique().tolist()) <= {0, 2, 3, 6, 8} and 6 in labels.unique().tolist()
    assert sums[[1, 4, 5, 7]].eq(0).all()


def test_post_processing_returns_maps_at_each_target_size():
    logits = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    proc = processor()
    maps = proc.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(30, 40), (7, 3)])
    assert [tuple(m.shape) for m in maps] == [(30, 40), (7, 3)]
    expected = F.interpolate(torch.sigmoid(logits[:1]), size=(30, 40), mode="bilinear", align_corners=False)[0]
    top2 = expected.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5  # float rounding aside
    assert clear.float().mean() > 0.99 and torch.equal(maps[0][clear], expected.argmax(0)[clear])
    assert tuple(proc.post_process_semantic_segmentation({"logits": logits})[0].shape) == (16, 16)
    panoptic = proc.post_process_panoptic_segmentation({"logits": logits}, target_sizes=[(30, 40), (7, 3)])[0]
    probs = proc.post_process_probabilities({"logits": logits}, target_sizes=[(30, 40), (7, 3)])[0]
    assert torch.equal(panoptic["segmentation"], maps[0])
    for segment in panoptic["segments_info"]:
        inside = maps[0] == segment["id"]
        assert segment["label_id"] == segment["id"]
        assert segment["score"] == pytest.approx(float(probs[segment["id"]][inside].mean()), abs=1e-5)
    assert {s["id"] for s in panoptic["segments_info"]} == set(maps[0].unique().tolist())
    with pytest.raises(ValueError, match="target sizes"):
        proc.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(3, 3)])


@pytest.mark.parametrize("canvas", [(160, 160), (150, 200)])
def test_sliding_window_views_cover_the_canvas_and_fold_back(canvas):
    proc = processor(do_sliding_window=True, sliding_window_canvas=list(canvas), sliding_window_overlap=0.333)
    stride = int(64 * 0.667)
    rows, cols = window_starts(canvas[0], 64, stride), window_starts(canvas[1], 64, stride)
    assert rows[-1] + 64 == canvas[0] and cols[-1] + 64 == canvas[1]
    inputs = proc([RGB, RGB])
    views = len(rows) * len(cols) + 1
    assert proc.num_views_per_image() == views
    assert inputs["pixel_values"].shape == (2 * views, 3, 64, 64)
    assert torch.equal(inputs["pruning_groups"], torch.arange(2).repeat_interleave(views))
    # The first crop is the top-left corner of the resized image; the last view is the whole image.
    image = torch.from_numpy(RGB).permute(2, 0, 1).float()
    resized = F.interpolate(image[None], size=canvas, mode="bilinear", align_corners=False, antialias=False)[0]
    assert torch.allclose(inputs["pixel_values"][0], ((resized - MEAN) / STD)[:, :64, :64], atol=1e-5)
    # Constant logits per class fold back into the same constant probability everywhere (overlaps averaged).
    logits = torch.linspace(-2, 2, 3).view(1, 3, 1, 1).expand(2 * views, 3, 16, 16)
    probs = proc.post_process_probabilities({"logits": logits}, target_sizes=[(30, 40)] * 2)
    assert torch.allclose(probs[1], torch.sigmoid(torch.linspace(-2, 2, 3)).view(3, 1, 1).expand(3, 30, 40), atol=1e-6)


@pytest.mark.parametrize("mode", ["default", "original"])
def test_sliding_window_merges_the_pruned_classes_once_with_the_same_result(mode):
    proc = processor(do_sliding_window=True, sliding_window_canvas=[100, 120], fast_decoder=True)
    views = proc.num_views_per_image()
    logits = torch.randn(views, 9, 16, 16, generator=torch.Generator().manual_seed(0))
    logits[:, [2, 4, 5, 7]] = PRUNED_LOGIT  # pruned for this image: the same in every view
    logits[:, 6] = 0.3  # constant too, but another value: merged on its own
    merged = []
    original = proc._merge_view_maps
    proc._merge_view_maps = lambda v, m: merged.append(v.shape[1]) or original(v, m)
    fast = proc._merge_views(logits, mode)
    assert merged == [6]  # 5 varying or other-constant classes + one of the 4 pruned ones
    full = original(logits, mode)
    # Fewer channels may take another vectorised path: the varying classes agree to the last bit or two.
    assert torch.equal(fast[[2, 4, 5, 7]], full[[2, 4, 5, 7]]) and torch.allclose(fast, full, rtol=0, atol=3e-7)
    assert torch.equal(proc._merge_views(logits[:, :2], mode), original(logits[:, :2], mode))


# ----------------------------------------------------------------------------- FGASegProcessor
def test_processor_prompts_templates_and_synonyms():
    proc = tiny_processor()
    tokenizer = tiny_tokenizer()
    out = proc.tokenize_vocabulary(["sky", "car, auto, automobile", "tree"])
    assert out["input_ids"].shape[:2] == (3, 1)
    expected = tokenizer("A photo of a car in the scene", truncation=True)["input_ids"]
    assert out["input_ids"][1, 0, : len(expected)].tolist() == expected  # first synonym only
    assert proc.tokenize_vocabulary(["sky"], templates="imagenet")["input_ids"].shape[:2] == (1, len(IMAGENET_TEMPLATES))
    select = proc.tokenize_vocabulary(["sky", "road"], templates="imagenet_select")
    assert select["input_ids"].shape[:2] == (2, len(IMAGENET_SELECT_TEMPLATES))
    mine = proc.tokenize_vocabulary(["sky"], templates=["{}", "a {}"])["input_ids"]
    assert mine[0, 0].tolist()[:3] == tokenizer("sky")["input_ids"]
    for bad, error in [([], ValueError), (["sky", "sky"], ValueError), ("sky", TypeError), ([""], ValueError)]:
        with pytest.raises(error):
            proc.tokenize_vocabulary(bad)
    with pytest.raises(ValueError, match="contain"):
        proc.tokenize_vocabulary(["sky"], templates=["no placeholder"])


def test_processor_feeds_the_model_and_templates_must_match_it():
    model = make_model()
    proc = tiny_processor(model.config)
    inputs = proc(images=RGB, text=["sky", "road", "car"])
    with torch.no_grad():
        direct = model(**inputs).logits
        flat = model(inputs["pixel_values"], inputs["input_ids"].flatten(0, 1)).logits
    assert direct.shape == (1, 3, 32, 32) and torch.equal(direct, flat)
    with pytest.raises(ValueError, match="prompt templates per class"):
        model(**proc(images=RGB, text=["sky"], templates=["{}", "a {}"]))


def test_label_list_parsing():
    assert parse_label_list(" sky,tree , car ") == ["sky", "tree", "car"]
    assert parse_label_list("chest of drawers, chest; door") == ["chest of drawers, chest", "door"]
    for text, message in [(" , ,", "only separators"), ("", "empty"), ("a, b, a", "duplicate")]:
        with pytest.raises(ValueError, match=message):
            parse_label_list(text)


def test_save_and_load_with_the_auto_classes(tmp_path):
    proc = tiny_processor(tiny_config(), processing_mode="original", do_reduce_labels=True)
    proc.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, FGASegProcessor) and loaded.prompt_templates == proc.prompt_templates
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(image_processor, FGASegImageProcessor)
    assert image_processor.processing_mode == "original" and image_processor.do_reduce_labels
    assert image_processor.image_size == 64
    names = ["sky", "road", "tree"]
    assert torch.equal(loaded.tokenize_vocabulary(names)["input_ids"], proc.tokenize_vocabulary(names)["input_ids"])
    assert torch.equal(loaded(images=RGB)["pixel_values"], proc(images=RGB)["pixel_values"])
