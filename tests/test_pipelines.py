"""pipeline("image-segmentation") and pipeline("open-vocabulary-segmentation") on a tiny saved model."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import make_model, run_without_package, tiny_processor
from PIL import Image
from transformers import pipeline

from fgaseg_hf import OpenVocabularySegmentationPipeline

NAMES = ["sky", "road", "car", "tree"]
IMAGE = Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8))
OTHER = Image.fromarray(np.random.default_rng(4).integers(0, 256, (80, 33, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-fgaseg")
    model = make_model()
    processor = tiny_processor(model.config)
    model.set_default_vocabulary(NAMES, processor.tokenize_vocabulary(NAMES)["input_ids"])
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def direct(folder, image, names):
    """Model + processor without a pipeline: probabilities at the image's size."""
    from fgaseg_hf import FGASegModel, FGASegProcessor

    model, processor = FGASegModel.from_pretrained(folder).eval(), FGASegProcessor.from_pretrained(folder)
    with torch.no_grad():
        out = model(**processor(images=image, text=names))
    return processor.post_process_probabilities(out, target_sizes=[(image.height, image.width)])[0], out


def check_segments(result, probs, names):
    """One mask per class present; masks partition the image; label and score are each class's argmax region.
    The pipeline resizes and takes the argmax in its own way: where the two best classes are closer than float
    rounding (~1e-7) either may win, so masks are compared where the best class is clear."""
    labels = probs.argmax(0)
    top2 = probs.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) > 1e-6).numpy()
    assert clear.mean() > 0.98
    assert set(labels[torch.from_numpy(clear)].unique().tolist()) <= {names.index(r["label"]) for r in result}
    assert {names.index(r["label"]) for r in result} <= set(labels.unique().tolist()) | set(probs.topk(2, 0).indices[1][~torch.from_numpy(clear)].tolist())
    coverage = np.zeros(labels.shape, dtype=int)
    for r in result:
        mask = np.asarray(r["mask"]) > 0
        assert r["mask"].size == (labels.shape[1], labels.shape[0]) and r["mask"].mode == "L"
        class_id = names.index(r["label"])
        assert np.array_equal(mask[clear], (labels == class_id).numpy()[clear])
        assert r["score"] == pytest.approx(float(probs[class_id][labels == class_id].mean()), abs=1e-4)
        coverage += mask
    assert (coverage == 1).all()


def test_image_segmentation_pipeline_uses_the_default_vocabulary(folder):
    segmenter = pipeline("image-segmentation", model=str(folder))
    probs, _ = direct(folder, IMAGE, NAMES)
    check_segments(segmenter(IMAGE), probs, NAMES)


def test_open_vocabulary_pipeline_any_labels_batching_and_text_cache(folder):
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    assert type(segmenter).__name__ == OpenVocabularySegmentationPipeline.__name__
    calls = []
    original = segmenter.model.get_text_embeddings
    segmenter.model.get_text_embeddings = lambda *a, **k: calls.append(1) or original(*a, **k)
    labels = ["car", "tree", "sky"]
    single = segmenter(IMAGE, candidate_labels=labels)
    check_segments(single, direct(folder, IMAGE, labels)[0], labels)
    batched = segmenter([IMAGE, OTHER], candidate_labels="car, tree, sky", batch_size=2)
    assert [(r["label"], r["score"]) for r in batched[0]] == [(r["label"], r["score"]) for r in single]
    check_segments(batched[1], direct(folder, OTHER, labels)[0], labels)
    assert len(calls) == 1  # one vocabulary: its text embeddings were computed once
    segmenter(IMAGE, candidate_labels=["road"])
    assert len(calls) == 2
    # Without labels: the model's own vocabulary.
    assert {r["label"] for r in segmenter(IMAGE)} <= set(NAMES)


def test_open_vocabulary_pipeline_errors(folder):
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    for labels, message in [([], "empty"), (["sky", "sky"], "duplicate"), (" , ", "only separators")]:
        with pytest.raises(ValueError, match=message):
            segmenter(IMAGE, candidate_labels=labels)
    with pytest.raises(ValueError, match="prompt template"):
        segmenter(IMAGE, candidate_labels=["sky"], templates=["{}", "a {}"])
    with pytest.raises(TypeError, match="unexpected"):
        segmenter(IMAGE, candidate_labels=["sky"], threshold=0.5)


def test_many_labels_beyond_pad_len_and_top_k_give_a_sensible_map(folder):
    """12 labels: more than class_aggregation_length (8, truncation) and inference_top_k (3, pruning). Every pixel
    still gets the best of the classes the model kept for the image."""
    labels = [f"{a}{b}" for a in "abc" for b in "wxyz"]
    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    result = segmenter(IMAGE, candidate_labels=labels)
    probs, out = direct(folder, IMAGE, labels)
    kept = out.kept_classes[0]
    assert 0 < int(kept.sum()) < len(labels)
    assert all(kept[labels.index(r["label"])] for r in result)
    check_segments(result, probs, labels)


def test_sliding_window_through_the_pipeline(folder):
    from fgaseg_hf import FGASegModel, FGASegProcessor

    segmenter = pipeline("open-vocabulary-segmentation", model=str(folder), trust_remote_code=True)
    segmenter.image_processor.sliding_window_canvas = [96, 128]
    result = segmenter([IMAGE, OTHER], candidate_labels=NAMES, sliding_window=True, batch_size=2)
    model, processor = FGASegModel.from_pretrained(folder).eval(), FGASegProcessor.from_pretrained(folder)
    processor.image_processor.sliding_window_canvas = [96, 128]
    with torch.no_grad():
        out = model(**processor(images=OTHER, text=NAMES, do_sliding_window=True))
    probs = processor.post_process_probabilities(out, target_sizes=[(80, 33)], do_sliding_window=True)[0]
    check_segments(result[1], probs, NAMES)


def test_pipelines_from_the_folder_in_a_fresh_process(folder, tmp_path):
    """Remote code only: the package cannot be imported; the task of pipeline(model=folder) comes from the folder."""
    IMAGE.save(tmp_path / "image.png")
    script = textwrap.dedent(
        f"""
        import json
        from transformers import AutoProcessor, pipeline
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "FGASegProcessor", type(processor)
        assert type(processor.image_processor).__name__ == "FGASegImageProcessor", type(processor.image_processor)
        assert tuple(processor.tokenize_vocabulary(["sky", "car"])["input_ids"].shape[:2]) == (2, 1)
        semantic = pipeline("image-segmentation", model={str(folder)!r}, trust_remote_code=True)
        open_vocabulary = pipeline(model={str(folder)!r}, trust_remote_code=True)
        assert type(open_vocabulary).__name__ == "OpenVocabularySegmentationPipeline", type(open_vocabulary)
        assert "fgaseg_hf" not in type(semantic.model).__module__
        a = semantic({str(tmp_path / "image.png")!r})
        b = open_vocabulary({str(tmp_path / "image.png")!r}, candidate_labels=["car", "tree", "sky"])
        print(json.dumps([[(r["label"], r["score"]) for r in a], [(r["label"], r["score"]) for r in b]]))
        """
    )
    result = run_without_package(script, tmp_path)
    assert "is not supported" not in result.stderr
    semantic, open_vocabulary = json.loads(result.stdout.strip().splitlines()[-1])
    probs, _ = direct(folder, IMAGE, NAMES)
    labels = probs.argmax(0)
    assert [label for label, _ in semantic] == [NAMES[i] for i in sorted(labels.unique().tolist())]
    for label, score in semantic:
        class_id = NAMES.index(label)
        assert score == pytest.approx(float(probs[class_id][labels == class_id].mean()), abs=1e-4)
    assert {label for label, _ in open_vocabulary} <= {"car", "tree", "sky"}
