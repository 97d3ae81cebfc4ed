"""`PairCounts`: raw (reference, prediction) pixel counts on every path (uint8 table, dense window, outliers,
the torch path that CUDA maps take), their state and merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fgaseg_hf.metrics.pair_counts import DENSE_LIMIT, PairCounts


def by_hand(references, predictions) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for r, p in zip(np.concatenate([np.asarray(x).reshape(-1) for x in references]).tolist(),
                    np.concatenate([np.asarray(x).reshape(-1) for x in predictions]).tolist()):
        counts[(int(r), int(p))] = counts.get((int(r), int(p)), 0) + 1
    return counts


def as_dict(counts: PairCounts) -> dict[tuple[int, int], int]:
    references, predictions, pixels = counts.pairs()
    return {(int(r), int(p)): int(c) for r, p, c in zip(references, predictions, pixels)}


MAPS = {
    "uint8": lambda rng: (rng.integers(0, 256, (2, 9, 7), dtype=np.uint8), rng.integers(0, 256, (2, 9, 7), dtype=np.uint8)),
    "uint16 labels, int64 predictions": lambda rng: (
        np.where(rng.random((9, 7)) < 0.3, 65535, rng.integers(0, 847, (9, 7))).astype(np.uint16),
        rng.integers(0, 847, (9, 7)).astype(np.int64)),
    "negative and huge": lambda rng: (
        rng.choice([-7, 0, 3, DENSE_LIMIT, 2**40], size=(6, 5)), rng.choice([-1, 2, 5, 2**62], size=(6, 5))),
    "int8 and bool": lambda rng: (rng.integers(-3, 4, (5, 5)).astype(np.int8), rng.random((5, 5)) < 0.5),
    "integral floats": lambda rng: (rng.integers(0, 5, (4, 4)).astype(np.float32), rng.integers(0, 5, (4, 4)) * 1.0),
}


@pytest.mark.parametrize("name", list(MAPS))
def test_counts_equal_a_count_by_hand_on_every_path(name):
    rng = np.random.default_rng(len(name))
    references, predictions = MAPS[name](rng)
    expected = by_hand([references], [predictions])
    counts = PairCounts().update(predictions, references)
    assert as_dict(counts) == expected and counts.pixels == references.size
    # The torch path (what maps on a CUDA device take), run here on CPU tensors.
    on_torch = PairCounts()
    reference_tensor = torch.from_numpy(np.asarray(references).astype(np.int64))
    prediction_tensor = torch.from_numpy(np.asarray(predictions).astype(np.int64))
    on_torch._count_torch(reference_tensor, prediction_tensor)
    assert as_dict(on_torch) == expected
    if np.asarray(references).dtype == np.uint8 and np.asarray(predictions).dtype == np.uint8:
        uint8 = PairCounts()
        uint8._count_torch(torch.from_numpy(references), torch.from_numpy(predictions))
        assert as_dict(uint8) == expected


def test_state_merge_and_mixed_paths():
    rng = np.random.default_rng(3)
    first = [rng.integers(0, 20, (8, 8)).astype(np.uint8) for _ in range(2)]
    second = [rng.choice([0, 5, 70000, -2], size=(8, 8)) for _ in range(2)]
    whole = PairCounts().update(first + second, first[::-1] + second[::-1])
    expected = by_hand(first[::-1] + second[::-1], first + second)
    assert as_dict(whole) == expected and whole.maps == 4
    part = PairCounts().update(first, first[::-1])
    rest = PairCounts().update(second, second[::-1])
    assert as_dict(PairCounts.from_state_dict(part.state_dict()).merge(rest)) == expected
    assert PairCounts.from_state_dict(whole.state_dict()).maps == 4
    with pytest.raises(ValueError, match="lacks"):
        PairCounts.from_state_dict({"references": torch.zeros(1)})
    with pytest.raises(ValueError, match="non-integral"):
        PairCounts().update(np.array([[0.5]]), np.array([[0]]))
    with pytest.raises(TypeError):
        PairCounts().update(np.array([["a"]]), np.array([["b"]]))


def test_class_counts_apply_the_settings_to_the_raw_pairs():
    counts = PairCounts().update(np.array([[0, 1, 2, 9]]), np.array([[1, 2, 255, 0]]))
    matrix, reference_only, prediction_only = counts.class_counts(3, ignore_index=255, label_map={1: 2, 2: 0})
    # Reference 1 -> 2 -> 0 (entry after entry), 2 -> 0, 0 stays 0 (prediction 9 is out of range), 255 dropped.
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(reference_only, [1, 0, 0])
    np.testing.assert_array_equal(prediction_only, [0, 0, 0])
    matrix, _, _ = counts.class_counts(3, ignore_index=None, reduce_labels=True)
    # reduce_labels: 1 -> 0, 2 -> 1, 0 -> 255 (kept: no ignore index; out of range), 255 -> 255.
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
