"""The streaming module is a drop-in for `evaluate`'s own "mean_iou": identical results on randomised cases.

The oracle is evaluate's module itself, vendored unchanged under tests/oracles (see its README), loaded offline with
``evaluate.load`` and used as evaluate users use it: settings given to ``compute``. Its ``label_map`` path fails
inside evaluate (its maps come back from the Arrow cache as PIL images, which it then tries to index), so the
``label_map`` cases compare against the oracle's own ``mean_iou`` function on numpy maps instead.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fgaseg_hf.metrics import STREAMING_MEAN_IOU_PATH, load_streaming_mean_iou

ORACLE = Path(__file__).resolve().parent / "oracles" / "mean_iou"


def _oracle_function():
    spec = importlib.util.spec_from_file_location("oracle_mean_iou", ORACLE / "mean_iou.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mean_iou


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    import evaluate

    cache = str(tmp_path_factory.mktemp("evaluate_cache"))
    return evaluate.load(str(ORACLE), cache_dir=cache), cache


def assert_identical(actual: dict, expected: dict) -> None:
    """Same keys in the same order, same value types and dtypes, bit-equal values (nan where nan)."""
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert type(actual[key]) is type(value), (key, type(actual[key]), type(value))
        if isinstance(value, np.ndarray):
            assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def random_case(seed: int):
    """Maps of random sizes and dtype with ignored pixels, ids below and above the range, absent classes; the maps
    split into batches, some of them empty; random settings."""
    rng = np.random.default_rng(seed)
    num_labels = int(rng.integers(1, 20))
    dtype = [np.uint8, np.int64, np.int32][seed % 3]
    ignore_index = int(rng.choice([255, 0, num_labels - 1, 3]))
    predictions, references = [], []
    for _ in range(int(rng.integers(1, 6))):
        shape = (int(rng.integers(1, 23)), int(rng.integers(1, 23)))
        low = 0 if dtype == np.uint8 else -3
        prediction = rng.integers(low, num_labels + 4, size=shape)
        reference = np.where(rng.random(shape) < 0.5, prediction, rng.integers(low, num_labels + 4, size=shape))
        reference[rng.random(shape) < 0.15] = ignore_index
        reference[rng.random(shape) < 0.05] = 255
        if dtype != np.uint8:
            prediction[rng.random(shape) < 0.03] = 70000
        predictions.append(prediction.astype(dtype))
        references.append(reference.astype(dtype))
    cuts = sorted(int(c) for c in rng.integers(0, len(predictions) + 1, size=2))
    batches = [(predictions[a:b], references[a:b]) for a, b in zip([0, *cuts], [*cuts, len(predictions)])]
    settings = {"num_labels": num_labels, "ignore_index": ignore_index, "reduce_labels": bool(rng.random() < 0.5)}
    nan_to_num = [None, 0, -1][seed % 3]
    if nan_to_num is not None:
        settings["nan_to_num"] = nan_to_num
    return predictions, references, batches, settings


@pytest.mark.parametrize("seed", range(12))
def test_identical_to_evaluate_mean_iou_in_every_call_pattern(seed, modules):
    peer, cache = modules
    predictions, references, batches, settings = random_case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for batch_predictions, batch_references in batches:
            peer.add_batch(predictions=batch_predictions, references=batch_references)
        expected = peer.compute(**settings)
        assert_identical(peer.compute(predictions=predictions, references=references, **settings), expected)

    # 1. The evaluate idiom: maps added batch by batch (empty batches too), every setting only at compute.
    ours = load_streaming_mean_iou(cache_dir=cache)
    for batch_predictions, batch_references in batches:
        ours.add_batch(predictions=batch_predictions, references=batch_references)
    assert_identical(ours.compute(**settings), expected)
    # 2. Everything at once.
    assert_identical(ours.compute(predictions=predictions, references=references, **settings), expected)
    # 3. Settings at load, maps one at a time (tensors for the signed dtypes).
    ours = load_streaming_mean_iou(cache_dir=cache, **settings)
    for prediction, reference in zip(predictions, references):
        as_tensor = prediction.dtype != np.uint8
        ours.add(prediction=torch.from_numpy(prediction) if as_tensor else prediction, reference=reference)
    assert_identical(ours.compute(), expected)
    # 4. Settings with the first add, the last maps given to compute.
    ours = load_streaming_mean_iou(cache_dir=cache)
    ours.add_batch(predictions=predictions[:1], references=references[:1], **settings)
    ours.add_batch(predictions=[], references=[])
    assert_identical(ours.compute(predictions=predictions[1:], references=references[1:]), expected)
    # 5. Other settings at compute than at load: compute wins.
    ours = load_streaming_mean_iou(cache_dir=cache, num_labels=50, ignore_index=1, reduce_labels=True)
    ours.add_batch(predictions=predictions, references=references)
    assert_identical(ours.compute(**settings), expected)


@pytest.mark.parametrize("seed", range(6))
def test_label_map_identical_to_the_standard_function(seed, modules):
    _, cache = modules
    oracle = _oracle_function()
    predictions, references, _, settings = random_case(100 + seed)
    rng = np.random.default_rng(seed)
    K = settings["num_labels"]
    # Chains (a -> b -> c) and cycles make the order of application visible.
    keys = rng.permutation(K + 3)[: max(1, K // 2)]
    label_map = {int(k): int(v) for k, v in zip(keys, rng.integers(0, K + 2, size=len(keys)))}
    label_map[int(keys[0])] = int(keys[-1])
    settings = {**settings, "label_map": label_map}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = oracle(
            results=[p.copy() for p in predictions], gt_seg_maps=[r.astype(np.int64) for r in references], **settings
        )
    ours = load_streaming_mean_iou(cache_dir=cache)
    ours.add_batch(predictions=predictions, references=references)
    assert_identical(ours.compute(**settings), expected)


def test_chained_label_map_by_hand(modules):
    """{1: 2, 2: 3}: the standard metric maps entry after entry, so reference 1 ends as 3, like reference 2."""
    _, cache = modules
    ours = load_streaming_mean_iou(cache_dir=cache)
    result = ours.compute(predictions=[np.array([[3, 3, 1]])], references=[np.array([[1, 2, 1]])], num_labels=4,
                          ignore_index=255, label_map={1: 2, 2: 3})
    np.testing.assert_array_equal(result["per_category_iou"], [np.nan, 0.0, np.nan, 2 / 3])


def test_nothing_added_and_empty_batches(modules):
    peer, cache = modules
    ours = load_streaming_mean_iou(cache_dir=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = peer.compute(predictions=[], references=[], num_labels=3, ignore_index=255)
        assert_identical(ours.compute(predictions=[], references=[], num_labels=3, ignore_index=255), expected)
    # Like the standard metric, compute without any add is an error.
    with pytest.raises(ValueError):
        peer.compute(num_labels=3, ignore_index=255)
    with pytest.raises(ValueError, match="nothing to compute"):
        ours.compute(num_labels=3, ignore_index=255)


def test_shipped_module_is_what_load_streaming_mean_iou_loads(modules):
    _, cache = modules
    import evaluate

    metric = evaluate.load(str(STREAMING_MEAN_IOU_PATH), cache_dir=cache)
    assert type(metric).__name__ == "StreamingMeanIoU"
