"""Tests of `fgaseg_hf.metrics`: the streaming mean IoU equals `evaluate`'s "mean_iou" exactly, in constant memory."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fgaseg_hf.metrics import (
    STREAMING_MEAN_IOU_PATH,
    ConfusionMatrix,
    argmax_logits_for_metrics,
    load_streaming_mean_iou,
    streaming_metrics_for_trainer,
)

# ---------------------------------------------------------------------------------------------------------------
# Reference: the algorithm of huggingface/evaluate metrics/mean_iou/mean_iou.py, step by step (per-image
# np.histogram with range (0, num_labels - 1), float64 totals), written out here because it cannot be downloaded.
# ---------------------------------------------------------------------------------------------------------------


def reference_intersect_and_union(pred_label, label, num_labels, ignore_index, label_map=None, reduce_labels=False):
    pred_label = np.array(pred_label)
    label = np.array(label)
    if label_map is not None:
        # Entry after entry on the already mapped values, as the standard metric does ({1: 2, 2: 3} sends 1 to 3).
        for old_id, new_id in label_map.items():
            label[label == old_id] = new_id
    if reduce_labels:
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
    mask = np.not_equal(label, ignore_index)
    pred_label = pred_label[mask]
    label = np.array(label)[mask]
    intersect = pred_label[pred_label == label]
    area_intersect = np.histogram(intersect, bins=num_labels, range=(0, num_labels - 1))[0]
    area_pred_label = np.histogram(pred_label, bins=num_labels, range=(0, num_labels - 1))[0]
    area_label = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
    area_union = area_pred_label + area_label - area_intersect
    return area_intersect, area_union, area_pred_label, area_label


def reference_mean_iou(results, gt_seg_maps, num_labels, ignore_index, nan_to_num=None, label_map=None,
                       reduce_labels=False) -> dict:
    total_area_intersect = np.zeros((num_labels,), dtype=np.float64)
    total_area_union = np.zeros((num_labels,), dtype=np.float64)
    total_area_pred_label = np.zeros((num_labels,), dtype=np.float64)
    total_area_label = np.zeros((num_labels,), dtype=np.float64)
    for result, gt_seg_map in zip(results, gt_seg_maps):
        area_intersect, area_union, area_pred_label, area_label = reference_intersect_and_union(
            result, gt_seg_map, num_labels, ignore_index, label_map, reduce_labels
        )
        total_area_intersect += area_intersect
        total_area_union += area_union
        total_area_pred_label += area_pred_label
        total_area_label += area_label
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-nan array
        all_acc = total_area_intersect.sum() / total_area_label.sum()
        iou = total_area_intersect / total_area_union
        acc = total_area_intersect / total_area_label
        metrics = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(acc),
            "overall_accuracy": all_acc,
            "per_category_iou": iou,
            "per_category_accuracy": acc,
        }
    if nan_to_num is not None:
        metrics = {metric: np.nan_to_num(value, nan=nan_to_num) for metric, value in metrics.items()}
    return metrics


def assert_same_result(actual: dict, expected: dict) -> None:
    """Same keys, same value types, equal values (nan where nan)."""
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert type(actual[key]) is type(value), (key, type(actual[key]), type(value))
        if isinstance(value, np.ndarray):
            assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, key
        np.testing.assert_allclose(actual[key], value, rtol=1e-12, atol=0, equal_nan=True, err_msg=key)


# ---------------------------------------------------------------------------------------------------------------
# Random data covering the corner cases.
# ---------------------------------------------------------------------------------------------------------------

NUM_LABELS = 12


def random_maps(seed: int, count: int = 7, sizes: list[tuple[int, int]] | None = None, dtype=np.int64,
                absent: tuple[int, ...] = (3, 7), ignore_index: int = 255):
    """Prediction and reference maps with ignored pixels, out-of-range ids on both sides and absent classes."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [(int(rng.integers(3, 17)), int(rng.integers(3, 17))) for _ in range(count)]
    present = np.array([c for c in range(NUM_LABELS) if c not in absent])
    predictions, references = [], []
    for height, width in sizes:
        prediction = rng.choice(present, size=(height, width))
        reference = np.where(rng.random((height, width)) < 0.5, prediction, rng.choice(present, size=(height, width)))
        reference[rng.random((height, width)) < 0.1] = ignore_index
        if dtype == np.int64:
            prediction[rng.random((height, width)) < 0.05] = -1  # below the range
            reference[rng.random((height, width)) < 0.03] = -3
        prediction[rng.random((height, width)) < 0.05] = NUM_LABELS + 5  # above the range
        reference[rng.random((height, width)) < 0.03] = NUM_LABELS
        reference[rng.random((height, width)) < 0.05] = 0
        predictions.append(prediction.astype(dtype))
        references.append(reference.astype(dtype))
    return predictions, references


CASES = {
    "plain": dict(ignore_index=255),
    "ignore_zero": dict(ignore_index=0),
    "reduce_labels": dict(ignore_index=255, reduce_labels=True),
    "reduce_labels_other_ignore": dict(ignore_index=4, reduce_labels=True),
    "label_map": dict(ignore_index=255, label_map={0: 255, 1: 2, 2: 1, NUM_LABELS: 5}),
    "label_map_chain": dict(ignore_index=255, label_map={1: 2, 2: 3, 3: 4}),
    "label_map_and_reduce": dict(ignore_index=255, label_map={5: 0, 0: 6}, reduce_labels=True),
    "nan_to_num": dict(ignore_index=255, nan_to_num=-1),
    "nan_to_num_reduce": dict(ignore_index=255, reduce_labels=True, nan_to_num=0),
}


@pytest.fixture(scope="module")
def evaluate_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluate_cache")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.int64, np.uint8])
def test_confusion_matrix_matches_standard_metric(name, dtype):
    options = CASES[name]
    predictions, references = random_maps(seed=list(CASES).index(name), dtype=dtype)
    expected = reference_mean_iou(predictions, references, NUM_LABELS, **options)
    assert np.isnan(reference_mean_iou(predictions, references, NUM_LABELS, options["ignore_index"])
                    ["per_category_iou"]).any(), "the data should leave some class absent"

    nan_to_num = options.get("nan_to_num")
    settings = {k: v for k, v in options.items() if k != "nan_to_num"}
    confusion = ConfusionMatrix(NUM_LABELS, **settings)
    confusion.update(predictions[:3], references[:3])  # a list of numpy maps of different sizes
    for prediction, reference in zip(predictions[3:], references[3:]):
        confusion.update(torch.from_numpy(prediction.astype(np.int64)), reference)  # one (H, W) map at a time
    assert_same_result(confusion.compute(nan_to_num=nan_to_num), expected)


def test_batched_tensor_input_and_no_nan_to_num_changes():
    predictions, references = random_maps(seed=3, sizes=[(9, 11)] * 5)
    expected = reference_mean_iou(predictions, references, NUM_LABELS, 255)
    confusion = ConfusionMatrix(NUM_LABELS)
    confusion.update(torch.from_numpy(np.stack(predictions)), torch.from_numpy(np.stack(references)))
    assert_same_result(confusion.compute(), expected)
    # A numpy (B, H, W) stack and nested Python lists count the same.
    other = ConfusionMatrix(NUM_LABELS).update(np.stack(predictions), np.stack(references))
    nested = ConfusionMatrix(NUM_LABELS).update([p.tolist() for p in predictions], [r.tolist() for r in references])
    single = ConfusionMatrix(NUM_LABELS).update(predictions[0].tolist(), references[0].tolist())
    assert torch.equal(other.matrix, confusion.matrix) and torch.equal(nested.matrix, confusion.matrix)
    assert_same_result(single.compute(), reference_mean_iou(predictions[:1], references[:1], NUM_LABELS, 255))


def test_out_of_range_corner_cases_by_hand():
    # reference 0 predicted 9 (out of range): counts for class 0's area, not in any prediction area;
    # reference 7 (out of range, not ignored) predicted 1: counts in class 1's prediction area only;
    # reference 255 (ignored) predicted 2: nowhere.
    prediction = np.array([[0, 9, 1, 2]])
    reference = np.array([[0, 0, 7, 255]])
    confusion = ConfusionMatrix(3).update(prediction, reference)
    intersect, union, pred_area, label_area = confusion.areas()
    np.testing.assert_array_equal(intersect, [1, 0, 0])
    np.testing.assert_array_equal(pred_area, [1, 1, 0])
    np.testing.assert_array_equal(label_area, [2, 0, 0])
    np.testing.assert_array_equal(union, [2, 1, 0])
    assert_same_result(confusion.compute(), reference_mean_iou([prediction], [reference], 3, 255))


def test_everything_ignored_gives_nan_like_the_standard_metric():
    prediction, reference = np.ones((4, 4), dtype=np.int64), np.full((4, 4), 255)
    expected = reference_mean_iou([prediction], [reference], 5, 255)
    result = ConfusionMatrix(5).update(prediction, reference).compute()
    assert np.isnan(result["mean_iou"]) and np.isnan(result["overall_accuracy"])
    assert_same_result(result, expected)
    assert_same_result(ConfusionMatrix(5).compute(nan_to_num=0), reference_mean_iou([], [], 5, 255, nan_to_num=0))


def test_single_label():
    predictions, references = [np.array([[0, 0, 1]])], [np.array([[0, 255, 0]])]
    assert_same_result(ConfusionMatrix(1).update(predictions, references).compute(),
                       reference_mean_iou(predictions, references, 1, 255))


def test_merge_state_dict_and_reset():
    predictions, references = random_maps(seed=11, count=10)
    whole = ConfusionMatrix(NUM_LABELS, reduce_labels=True).update(predictions, references)
    first = ConfusionMatrix(NUM_LABELS, reduce_labels=True).update(predictions[:4], references[:4])
    second = ConfusionMatrix(NUM_LABELS, reduce_labels=True).update(predictions[4:], references[4:])
    merged = ConfusionMatrix(NUM_LABELS, reduce_labels=True)
    merged.merge(first)
    merged += second
    for name in ("matrix", "reference_only", "prediction_only"):
        assert torch.equal(getattr(merged, name), getattr(whole, name))
    assert_same_result(merged.compute(), whole.compute())
    with pytest.raises(ValueError):
        merged.merge(ConfusionMatrix(NUM_LABELS))  # different reduce_labels

    # Resume: an evaluation saved half way continues to the same result.
    resumed = ConfusionMatrix(NUM_LABELS, reduce_labels=True)
    resumed.load_state_dict(first.state_dict())
    resumed.update(predictions[4:], references[4:])
    assert_same_result(resumed.compute(), whole.compute())
    with pytest.raises(ValueError):
        ConfusionMatrix(NUM_LABELS + 1, reduce_labels=True).load_state_dict(first.state_dict())

    whole.reset()
    assert not whole.matrix.any() and not whole.reference_only.any() and not whole.prediction_only.any()


def test_all_reduce(tmp_path):
    predictions, references = random_maps(seed=5)
    confusion = ConfusionMatrix(NUM_LABELS).update(predictions, references)
    before = {name: getattr(confusion, name).clone() for name in ("matrix", "reference_only", "prediction_only")}
    confusion.all_reduce()  # torch.distributed not initialised: no-op
    assert torch.equal(confusion.matrix, before["matrix"])
    if not torch.distributed.is_available():
        return
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        confusion.all_reduce()  # one process: the sum is itself
    finally:
        torch.distributed.destroy_process_group()
    for name in ("matrix", "reference_only", "prediction_only"):
        assert torch.equal(getattr(confusion, name), before[name])


def test_confusion_matrix_memory_is_constant():
    """The counts grow with the number of distinct values seen, not with the number of maps."""
    confusion = ConfusionMatrix(NUM_LABELS)
    sizes = []
    for seed in range(50):
        predictions, references = random_maps(seed=seed, count=3)
        confusion.update(predictions, references)
        sizes.append(confusion.counts.nbytes)
    assert len(set(sizes[5:])) == 1 and sizes[-1] < 300_000
    assert confusion.counts.maps == 150


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(np.zeros((2, 3), dtype=np.int64), np.zeros((3, 2), dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------------
# The evaluate module.
# ---------------------------------------------------------------------------------------------------------------


def test_evaluate_module_one_shot_and_private_compute(evaluate_cache):
    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache))
    for name, options in CASES.items():
        predictions, references = random_maps(seed=len(name))
        expected = reference_mean_iou(predictions, references, NUM_LABELS, **options)
        # As the standard metric is used: everything given to compute.
        assert_same_result(metric.compute(predictions=predictions, references=references, num_labels=NUM_LABELS,
                                          **options), expected)
        assert_same_result(metric._compute(predictions, references, NUM_LABELS, **options), expected)


@pytest.mark.parametrize("name", ["plain", "reduce_labels", "label_map_and_reduce", "nan_to_num_reduce"])
def test_evaluate_module_streaming(name, evaluate_cache):
    import evaluate

    options = CASES[name]
    nan_to_num = options.get("nan_to_num")
    settings = {k: v for k, v in options.items() if k != "nan_to_num"}
    predictions, references = random_maps(seed=21, count=9)
    expected = reference_mean_iou(predictions, references, NUM_LABELS, **options)

    # Settings at load time (evaluate.load passes unknown keyword arguments to the metric's __init__).
    metric = evaluate.load(str(STREAMING_MEAN_IOU_PATH), cache_dir=str(evaluate_cache), num_labels=NUM_LABELS,
                           **settings)
    metric.add_batch(predictions=predictions[:4], references=references[:4])
    metric.add(prediction=predictions[4], reference=references[4])
    metric.add_batch(predictions=[torch.from_numpy(p) for p in predictions[5:]], references=references[5:])
    # Repeating the settings at compute, as with the standard metric, is accepted when they agree.
    assert_same_result(metric.compute(num_labels=NUM_LABELS, nan_to_num=nan_to_num, **settings), expected)

    # Settings on the first add_batch call instead; a last batch may come with compute.
    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache))
    metric.add_batch(predictions=predictions[:5], references=references[:5], num_labels=NUM_LABELS, **settings)
    metric.add_batch(predictions=predictions[5:8], references=references[5:8])
    result = metric.compute(predictions=predictions[8:], references=references[8:], nan_to_num=nan_to_num)
    assert_same_result(result, expected)


def test_evaluate_module_settings_errors_and_reset(evaluate_cache):
    predictions, references = random_maps(seed=2)
    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache))
    metric.add_batch(predictions=predictions, references=references)  # counting needs no setting
    with pytest.raises(ValueError, match="num_labels"):
        metric.compute()
    # The counts survive the failed compute.
    assert_same_result(metric.compute(num_labels=NUM_LABELS, ignore_index=255),
                       reference_mean_iou(predictions, references, NUM_LABELS, 255))
    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache), num_labels=NUM_LABELS, ignore_index=255)
    metric.add_batch(predictions=predictions, references=references)
    with pytest.raises(ValueError, match="unexpected"):
        metric.add_batch(predictions=predictions, references=references, bogus=1)
    with pytest.raises(ValueError, match="reduce_labels"):  # two adds of one round disagree
        metric.add_batch(predictions=predictions[:1], references=references[:1], reduce_labels=True)
        metric.add_batch(predictions=predictions[:1], references=references[:1], reduce_labels=False)
    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache), num_labels=NUM_LABELS, ignore_index=255)
    metric.add_batch(predictions=predictions, references=references)
    # Settings given to compute win over the load-time ones: the raw counts serve any of them.
    assert_same_result(metric.compute(ignore_index=0), reference_mean_iou(predictions, references, NUM_LABELS, 0))
    assert metric.counts is None
    metric.add_batch(predictions=predictions, references=references)
    assert_same_result(metric.compute(num_labels=NUM_LABELS, ignore_index=255),
                       reference_mean_iou(predictions, references, NUM_LABELS, 255))
    # compute cleared the counts: the next round starts from zero and may choose other settings.
    assert metric.counts is None
    with pytest.raises(ValueError, match="nothing to compute"):
        metric.compute()
    result = metric.compute(predictions=predictions[:2], references=references[:2], ignore_index=0)
    assert_same_result(result, reference_mean_iou(predictions[:2], references[:2], NUM_LABELS, 0))


def test_evaluate_module_keeps_nothing_but_the_counts(tmp_path):
    metric = load_streaming_mean_iou(cache_dir=str(tmp_path), num_labels=NUM_LABELS)
    sizes = []
    for seed in range(60):
        predictions, references = random_maps(seed=seed, count=2, sizes=[(32, 32), (24, 40)])
        metric.add_batch(predictions=predictions, references=references)
        sizes.append(metric.counts.nbytes)
    assert len(set(sizes[5:])) == 1
    # evaluate's own store (arrow writer, in-memory buffer, cache files) was never used.
    assert len(metric) == 0
    assert metric.writer is None and metric.buf_writer is None and metric.data is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert metric.compute()["per_category_iou"].shape == (NUM_LABELS,)


def test_evaluate_module_features_and_docstrings(evaluate_cache):
    import datasets

    metric = load_streaming_mean_iou(cache_dir=str(evaluate_cache))
    assert set(metric.features) == {"predictions", "references"}
    assert metric.features["predictions"] == datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
    assert "num_labels" in metric.add_batch.__doc__ and "num_labels" in metric.compute.__doc__


# ---------------------------------------------------------------------------------------------------------------
# Trainer hooks.
# ---------------------------------------------------------------------------------------------------------------


def test_argmax_logits_for_metrics():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 8, 6)
    labels = torch.zeros(3, 32, 24, dtype=torch.long)
    expected = F.interpolate(logits, size=(32, 24), mode="bilinear", align_corners=False).argmax(dim=1)
    output = argmax_logits_for_metrics(logits, labels)
    assert output.dtype == torch.int64 and output.shape == (3, 32, 24)
    assert torch.equal(output, expected)
    assert torch.equal(argmax_logits_for_metrics((logits, torch.randn(3, 5, 2, 2)), labels), expected)
    assert torch.equal(argmax_logits_for_metrics(logits, torch.zeros(3, 8, 6)), logits.argmax(dim=1))


def test_streaming_metrics_for_trainer():
    torch.manual_seed(1)
    id2label = {i: f"class{i}" for i in range(NUM_LABELS)}
    compute_metrics = streaming_metrics_for_trainer(NUM_LABELS, ignore_index=255, id2label=id2label)
    batches = []
    for seed in (7, 8):
        predictions, references = random_maps(seed=seed, count=2, sizes=[(10, 12), (10, 12)])
        batches.append((torch.from_numpy(np.stack(predictions)), torch.from_numpy(np.stack(references))))

    assert compute_metrics(SimpleNamespace(predictions=batches[0][0], label_ids=batches[0][1]),
                           compute_result=False) == {}
    metrics = compute_metrics(SimpleNamespace(predictions=batches[1][0].numpy(), label_ids=batches[1][1].numpy()),
                              compute_result=True)
    all_predictions = [p for batch in batches for p in batch[0].numpy()]
    all_references = [r for batch in batches for r in batch[1].numpy()]
    expected = reference_mean_iou(all_predictions, all_references, NUM_LABELS, 255)
    assert set(metrics) == {"mean_iou", "mean_accuracy", "overall_accuracy"} | {f"iou_class{i}" for i in range(12)}
    assert all(type(value) is float for value in metrics.values())
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert metrics[key] == float(expected[key])
    np.testing.assert_array_equal([metrics[f"iou_class{i}"] for i in range(NUM_LABELS)], expected["per_category_iou"])

    # Reset after compute_result: the next evaluation sees only its own batches.
    again = compute_metrics(SimpleNamespace(predictions=batches[1][0], label_ids=batches[1][1]), compute_result=True)
    alone = reference_mean_iou(list(batches[1][0].numpy()), list(batches[1][1].numpy()), NUM_LABELS, 255)
    assert again["mean_iou"] == float(alone["mean_iou"])


def test_trainer_accepts_the_hooks():
    import inspect

    compute_metrics = streaming_metrics_for_trainer(3)
    assert "compute_result" in inspect.signature(compute_metrics).parameters
    metrics = compute_metrics(SimpleNamespace(predictions=(torch.zeros(1, 2, 2, dtype=torch.long),),
                                              label_ids=torch.zeros(1, 2, 2, dtype=torch.long)), compute_result=True)
    assert metrics["mean_iou"] == 1.0 and "iou_0" not in metrics
