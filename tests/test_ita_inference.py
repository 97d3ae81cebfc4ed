"""ITA through the shared user-facing code: ITAImageProcessor, ITAProcessor, the two pipelines (in process and as
remote code) and `fgaseg segment`, on a tiny random ITA."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_without_package, tiny_tokenizer
from PIL import Image
from test_modeling_ita import make_ita
from transformers import AutoProcessor, pipeline

from fgaseg_hf import (
    ITAImageProcessor,
    ITAModel,
    ITAProcessor,
    OpenVocabularySegmentationPipeline,
)
from fgaseg_hf.cli import main

NAMES = ["sky", "road, street", "car", "tree"]
MEAN = [122.7709383, 116.7460125, 104.09373615]
STD = [68.5005327, 66.6321579, 70.32316305]
IMAGE = Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8))
OTHER = Image.fromarray(np.random.default_rng(4).integers(0, 256, (80, 33, 3), dtype=np.uint8))
# Test size of the tiny model: shortest edge 48, longest at most 96 (the original's 800 / 1333 scaled down).
SIZES = dict(min_size_test=48, max_size_test=96)


def tiny_model() -> ITAModel:
    return make_ita(**SIZES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny ITA with its processor and a default vocabulary."""
    path = tmp_path_factory.mktemp("tiny-ita")
    model = tiny_model()
    model.set_default_vocabulary(NAMES, tiny_tokenizer())
    model.save_pretrained(path)
    ITAProcessor.from_model_config(model.config, tiny_tokenizer()).save_pretrained(path)
    return path


def load(folder):
    return ITAModel.from_pretrained(folder).eval(), ITAProcessor.from_pretrained(folder)


def direct(folder, image, names):
    """Processor + model + post-processing without a pipeline, at the image's size."""
    model, processor = load(folder)
    with torch.no_grad():
        out = model(**processor(images=image, text=names))
    size = [(image.height, image.width)]
    return (
        processor.post_process_panoptic_segmentation(out, target_sizes=size)[0],
        processor.post_process_probabilities(out, target_sizes=size)[0],
    )


def check_segments(result, expected, probs, names):
    """Pipeline segments == the direct computation's segments; scores are each class's mean score over its mask."""
    labels = expected["segmentation"]
    assert [r["label"] for r in result] == [names[s["label_id"]] for s in expected["segments_info"]]
    coverage = np.zeros(labels.shape, dtype=int)
    for r, segment in zip(result, expected["segments_info"]):
        mask = np.asarray(r["mask"]) > 0
        assert r["mask"].size == (labels.shape[1], labels.shape[0]) and r["mask"].mode == "L"
        assert np.array_equal(mask, (labels == segment["id"]).numpy())
        assert r["score"] == segment["score"]
        class_id = names.index(r["label"])
        assert r["score"] == pytest.approx(float(probs[class_id][labels == class_id].mean()), abs=1e-4)
        coverage += mask
    assert (coverage == 1).all()


# ----------------------------------------------------------------------------- preprocessing
def hand_resize(image: Image.Image, size) -> torch.Tensor:
    """detectron2's 8-bit path: PIL bilinear on the uint8 RGB image."""
    resized = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).astype(np.float32)).permute(2, 0, 1)


def hand_normalise(image: torch.Tensor) -> torch.Tensor:
    return (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def test_preprocessing_resizes_normalises_and_pads_as_detectron2():
    processor = ITAImageProcessor.from_model_config(tiny_model().config)
    assert (processor.shortest_edge, processor.max_size, processor.size_divisibility) == (48, 96, 32)
    # Shortest edge 48; 45x70 -> 48 x 74.67 -> (48, 75); 80x33 -> 116.4 x 48 exceeds 96 -> x 96/116.4 -> (96, 40).
    assert processor.resized_size(45, 70) == (48, 75)
    assert processor.resized_size(80, 33) == (96, 40)
    assert processor.resized_size(48, 48) == (48, 48)
    inputs = processor([IMAGE, OTHER], return_tensors="pt")
    # The canvas: largest height / width (96, 75), rounded up to 32.
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 96, 96)
    for index, (image, size) in enumerate([(IMAGE, (48, 75)), (OTHER, (96, 40))]):
        expected = torch.zeros(3, 96, 96)
        expected[:, : size[0], : size[1]] = hand_normalise(hand_resize(image, size))
        assert torch.equal(inputs["pixel_values"][index], expected)
        mask = torch.zeros(96, 96, dtype=torch.long)
        mask[: size[0], : size[1]] = 1
        assert torch.equal(inputs["pixel_mask"][index], mask)
    # A float image (values off the 8-bit grid) takes detectron2's float path: torch bilinear, no antialias.
    array = np.random.default_rng(5).random((45, 70, 3)).astype(np.float32)
    single = processor(array, return_tensors="pt")
    expected = F.interpolate(torch.from_numpy(array * 255.0).permute(2, 0, 1)[None], size=(48, 75), mode="bilinear",
                             align_corners=False)[0]
    assert tuple(single["pixel_values"].shape) == (1, 3, 64, 96)
    assert torch.allclose(single["pixel_values"][0, :, :48, :75], hand_normalise(expected), atol=1e-5)
    assert single["pixel_values"][0, :, 48:].abs().sum() == 0 and single["pixel_values"][0, :, :, 75:].abs().sum() == 0
    # Without resizing: only normalisation and padding.
    raw = processor(IMAGE, do_resize=False)
    assert tuple(raw["pixel_values"].shape) == (1, 3, 64, 96)
    assert torch.equal(raw["pixel_values"][0, :, :45, :70], hand_normalise(hand_resize(IMAGE, (45, 70))))
    # Batching separately preprocessed images gives the batch preprocessing gives.
    merged = processor.collate([processor(IMAGE), processor(OTHER)])
    assert torch.equal(merged["pixel_values"], inputs["pixel_values"])
    assert torch.equal(merged["pixel_mask"], inputs["pixel_mask"])


def test_segmentation_maps_become_one_mask_per_class_present():
    processor = ITAImageProcessor.from_model_config(tiny_model().config)
    label = np.full((45, 70), 255, dtype=np.int64)
    label[:20, :30], label[20:, :50], label[:, 50:] = 3, 0, 7
    label[5:10, 5:10] = 255
    inputs = processor(IMAGE, segmentation_maps=Image.fromarray(label.astype(np.uint8)))
    resized = F.interpolate(torch.from_numpy(label)[None, None].double(), size=(48, 75), mode="nearest")[0, 0].long()
    assert inputs["class_labels"][0].tolist() == [0, 3, 7]
    masks = inputs["mask_labels"][0]
    assert tuple(masks.shape) == (3, 64, 96) and masks.dtype == torch.float32
    for row, class_id in enumerate([0, 3, 7]):
        assert torch.equal(masks[row, :48, :75], (resized == class_id).float())
        assert masks[row, 48:].sum() == 0 and masks[row, :, 75:].sum() == 0
    # Ignored pixels are in no mask.
    assert torch.equal(masks.sum(0)[:48, :75], (resized != 255).float())
    # ADE-style reduction: 0 -> ignore, others - 1; an all-ignored map gives no masks.
    reduced = processor(IMAGE, segmentation_maps=label, do_reduce_labels=True)
    assert reduced["class_labels"][0].tolist() == [2, 6]
    empty = processor(IMAGE, segmentation_maps=np.full((45, 70), 255))
    assert tuple(empty["mask_labels"][0].shape) == (0, 64, 96) and empty["class_labels"][0].numel() == 0
    with pytest.raises(ValueError, match="segmentation map 0 has size"):
        processor(IMAGE, segmentation_maps=label[:10])
    # The targets train the model as they are.
    model = tiny_model().train()
    text = ITAProcessor.from_model_config(model.config, tiny_tokenizer()).tokenize_vocabulary(
        ["a", "b", "c", "d", "e", "f", "g", "h"])
    out = model(**inputs, **text)
    assert torch.isfinite(out.loss) and out.loss > 0


# ----------------------------------------------------------------------------- processor
def test_processor_text_side_is_the_model_text_side_and_round_trips(tmp_path):
    model = tiny_model()
    processor = ITAProcessor.from_model_config(model.config, tiny_tokenizer())
    text = processor.tokenize_vocabulary(NAMES)
    built = model.build_text_inputs(tiny_tokenizer(), NAMES)
    assert sorted(text) == sorted(k for k in built if k != "dominant_names")
    for key in text:
        assert torch.equal(text[key], built[key]), key
    assert text["synonym_to_class"].tolist() == [0, 1, 1, 2, 3]
    assert text["seen_classes"].tolist() == [True, False, True, False]
    assert tuple(text["input_ids"].shape) == (5 * 2, 16) and tuple(text["dominant_input_ids"].shape) == (6, 16)
    assert processor.dominant_names(NAMES) == built["dominant_names"] == ["sky", "road", "street", "car", "tree", "other"]
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is ITAProcessor and type(loaded.image_processor) is ITAImageProcessor
    assert (loaded.prompt_templates, loaded.seen_class_names, loaded.max_length) == (["a {}", "the {}"], ["sky", "car"], 16)
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    for key, value in loaded.tokenize_vocabulary(NAMES).items():
        assert torch.equal(value, text[key])
    with pytest.raises(ValueError, match="duplicate"):
        processor.tokenize_vocabulary(["sky", "sky"])


@pytest.mark.parametrize("order", ["after", "before"])
def test_post_processing_gives_the_model_semantic_maps_and_their_argmax(order):
    model = tiny_model()
    model.config.postprocess_order = order
    processor = ITAProcessor.from_model_config(model.config, tiny_tokenizer())
    assert processor.image_processor.postprocess_order == order
    targets = [(45, 70), (80, 33)]
    with torch.no_grad():
        out = model(**processor(images=[IMAGE, OTHER], text=NAMES), target_sizes=targets)
    probs = processor.post_process_probabilities(out, target_sizes=targets)
    labels = processor.post_process_semantic_segmentation(out, target_sizes=targets)
    panoptic = processor.post_process_panoptic_segmentation(out, target_sizes=targets)
    for index, size in enumerate(targets):
        assert torch.allclose(probs[index], out.semantic_maps[index], atol=1e-6)
        assert tuple(labels[index].shape) == size and labels[index].dtype == torch.long
        assert torch.equal(labels[index], probs[index].argmax(0))
        assert torch.equal(panoptic[index]["segmentation"], labels[index])
        present = labels[index].unique().tolist()
        assert [s["label_id"] for s in panoptic[index]["segments_info"]] == present
        for segment in panoptic[index]["segments_info"]:
            region = labels[index] == segment["id"]
            assert segment["score"] == pytest.approx(float(probs[index][segment["id"]][region].mean()), abs=1e-5)
    # Default size: each input image's (the processor's `original_sizes`, which the model passes on); without it,
    # each image's size on the canvas.
    assert [tuple(m.shape) for m in processor.post_process_semantic_segmentation(out)] == targets
    bare = type(out)(**{key: value for key, value in out.items() if key != "original_sizes"})
    assert [tuple(m.shape) for m in processor.post_process_semantic_segmentation(bare)] == [(48, 75), (96, 40)]


# ----------------------------------------------------------------------------- pipelines
def test_open_vocabulary_pipeline_equals_the_direct_computation_and_caches_the_vocabulary(folder):
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    assert type(segmenter).__name__ == OpenVocabularySegmentationPipeline.__name__
    calls, forwards = [], []
    encode, forward = segmenter.model.encode_vocabulary, segmenter.model.forward
    segmenter.model.encode_vocabulary = lambda *a, **k: calls.append(a[1]) or encode(*a, **k)
    segmenter.model.forward = lambda *a, **k: forwards.append(sorted(k)) or forward(*a, **k)
    labels = ["zebra", "road, street", "sky"]
    single = segmenter(IMAGE, candidate_labels=labels)
    expected, probs = direct(folder, IMAGE, labels)
    check_segments(single, expected, probs, labels)
    batched = segmenter([IMAGE, OTHER], candidate_labels="zebra; road, street; sky", batch_size=2)
    assert [(r["label"], r["score"]) for r in batched[0]] == [(r["label"], r["score"]) for r in single]
    for a, b in zip(batched[0], single):
        assert np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
    check_segments(batched[1], *direct(folder, OTHER, labels), labels)
    # One vocabulary: encoded once; the forward passes get the cached embeddings, never token ids.
    assert calls == [labels]
    assert all("text_embeds" in keys and "dominant_text_embeds" in keys and "input_ids" not in keys for keys in forwards)
    segmenter(IMAGE, candidate_labels=["road"])
    assert calls == [labels, ["road"]]
    # Without labels: the model's own vocabulary.
    assert {r["label"] for r in segmenter(IMAGE)} <= set(NAMES)


def test_image_segmentation_pipeline_uses_the_default_vocabulary(folder):
    segmenter = pipeline("image-segmentation", model=str(folder))
    check_segments(segmenter(IMAGE), *direct(folder, IMAGE, NAMES), NAMES)


def test_pipelines_from_the_folder_in_a_fresh_process(folder, tmp_path):
    """Remote code only: the package cannot be imported; the task of pipeline(model=folder) comes from the folder."""
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"]["open-vocabulary-segmentation"]["impl"].endswith("OpenVocabularySegmentationPipeline")
    IMAGE.save(tmp_path / "image.png")
    script = textwrap.dedent(
        f"""
        import json
        from transformers import AutoProcessor, pipeline
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "ITAProcessor", type(processor)
        assert type(processor.image_processor).__name__ == "ITAImageProcessor", type(processor.image_processor)
        semantic = pipeline("image-segmentation", model={str(folder)!r}, trust_remote_code=True)
        open_vocabulary = pipeline(model={str(folder)!r}, trust_remote_code=True)
        assert type(open_vocabulary).__name__ == "OpenVocabularySegmentationPipeline", type(open_vocabulary)
        assert "fgaseg_hf" not in type(semantic.model).__module__
        assert "fgaseg_hf" not in type(open_vocabulary.image_processor).__module__
        a = semantic({str(tmp_path / "image.png")!r})
        b = open_vocabulary({str(tmp_path / "image.png")!r}, candidate_labels=["zebra", "road, street", "sky"])
        print(json.dumps([[(r["label"], r["score"]) for r in a], [(r["label"], r["score"]) for r in b]]))
        """
    )
    result = run_without_package(script, tmp_path)
    assert "is not supported" not in result.stderr
    semantic, open_vocabulary = json.loads(result.stdout.strip().splitlines()[-1])
    for got, names in [(semantic, NAMES), (open_vocabulary, ["zebra", "road, street", "sky"])]:
        expected, _ = direct(folder, IMAGE, names)
        assert got == [[names[s["label_id"]], s["score"]] for s in expected["segments_info"]]


# ----------------------------------------------------------------------------- fgaseg segment
def test_segment_command_writes_the_pngs_for_an_ita_folder(folder, tmp_path, capsys):
    IMAGE.save(tmp_path / "street.png")
    code = main(["segment", str(tmp_path / "street.png"), "--labels", "sky, road", "--model", str(folder),
                 "--output", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    labels = np.asarray(Image.open(record["labels_png"]))
    model, processor = load(folder)
    with torch.no_grad():
        out = model(**processor(images=IMAGE, text=["sky", "road"]))
    expected = processor.post_process_semantic_segmentation(out, target_sizes=[(45, 70)])[0].numpy()
    assert np.array_equal(labels, expected)
    assert Image.open(record["overlay_png"]).size == IMAGE.size
    fractions = np.bincount(labels.ravel(), minlength=2) / labels.size
    assert [record["classes"][n] for n in ["sky", "road"]] == pytest.approx(fractions.tolist(), abs=1e-6)
    # Without --labels: the model's default vocabulary.
    code = main(["segment", str(tmp_path / "street.png"), "--model", str(folder), "--output", str(tmp_path / "d"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err and list(json.loads(captured.out)["classes"]) == NAMES
    # --sliding-window is FGA-Seg's: one line, and no output folder left behind.
    code = main(["segment", str(tmp_path / "street.png"), "--model", str(folder), "--output", str(tmp_path / "sw"),
                 "--sliding-window"])
    captured = capsys.readouterr()
    assert code != 0 and "--sliding-window: ITA models have no sliding-window inference" in captured.err
    assert not (tmp_path / "sw").exists()


# ----------------------------------------------------------------------------- errors
def test_clear_errors(folder, tmp_path, capsys):
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="sliding_window=True is only available for FGA-Seg models.*'ita'"):
        segmenter(IMAGE, candidate_labels=["sky"], sliding_window=True)
    IMAGE.save(tmp_path / "x.png")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    for extra, message in [
        (["--model", str(folder), "--sliding-window"], "--sliding-window: ITA models have no sliding-window inference"),
        (["--model", str(tmp_path / "clip")], "an ITA model nor an FC-CLIP model (its config has model_type 'clip'"),
    ]:
        code = main(["segment", str(tmp_path / "x.png"), "--labels", "sky, road", "--output", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err
        # One error line (after the weight-loading progress bar when the model was loaded).
        lines = [line for line in err.strip().splitlines() if line.strip() and "Loading weights" not in line]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    from fgaseg_hf.segment import SegmentError, load_model_and_processor

    with pytest.raises(SegmentError, match="not an FGA-Seg model nor .*an ITA model nor an FC-CLIP model"):
        load_model_and_processor(str(tmp_path / "clip"))
    model = tiny_model()
    with pytest.raises(ValueError, match="default vocabulary"):
        model(torch.zeros(1, 3, 32, 32))
