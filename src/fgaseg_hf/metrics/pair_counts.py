"""Raw pixel counts of (reference value, prediction value) pairs, from which any mean IoU setting follows exactly.

`evaluate`'s "mean_iou" applies ``label_map``, ``reduce_labels``, ``ignore_index`` and its histogram range
(``num_labels``) pixel by pixel, and each of those rules depends only on the pixel's own two values. Counting how
many pixels carry each distinct (reference, prediction) pair therefore keeps everything the metric can ever need:
the settings can be chosen when the result is computed, and memory grows with the number of distinct values, not
with the number of pixels or maps.

Counting is one ``bincount`` over a flat index built in the maps' own integer type (a ``uint16`` index for
``uint8`` maps, as label PNGs are), with no boolean-mask gather unless some value falls outside
``[0, DENSE_LIMIT)``; only those pixels are then counted with ``unique``. Maps on a CUDA device are counted there
and only the small count table comes back to the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DENSE_LIMIT", "PairCounts", "iter_map_batches", "map_references"]

# Values in [0, DENSE_LIMIT) on both sides go to a dense table (at most DENSE_LIMIT**2 int64 counts, reached only
# when such large ids really occur); any other pair is kept in a dictionary.
DENSE_LIMIT = 2048

SegmentationMaps = torch.Tensor | np.ndarray | Sequence[Any]


def iter_map_batches(predictions: SegmentationMaps, references: SegmentationMaps) -> Iterator[tuple[Any, Any]]:
    """Yield (prediction, reference) pairs of equally shaped chunks: one (H, W) map or a (B, H, W) stack."""
    if isinstance(predictions, (torch.Tensor, np.ndarray)):
        yield predictions, references
        return
    if not isinstance(predictions, (list, tuple)):
        raise TypeError(f"predictions must be a tensor, an array or a list of maps, got {type(predictions)}")
    if not isinstance(references, (list, tuple, torch.Tensor, np.ndarray)) or len(predictions) != len(references):
        raise ValueError("predictions and references must hold the same number of maps")
    if len(predictions) == 0:
        return
    first = predictions[0]
    if not isinstance(first, (torch.Tensor, np.ndarray)) and np.ndim(first) == 1:
        # A nested Python list of rows: a single (H, W) map, not a list of maps.
        yield predictions, references
        return
    yield from zip(predictions, references)


def _integral_float_check(finite_and_integral: bool) -> None:
    if not finite_and_integral:
        raise ValueError("segmentation maps must hold integer class ids, got non-integral or non-finite values")


def _as_ids(value: Any) -> np.ndarray | torch.Tensor:
    """Class ids as a numpy integer array, or as an integer tensor when it lives on an accelerator."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            if value.dtype == torch.bool:
                return value.to(torch.uint8)
            if value.is_complex():
                raise TypeError("segmentation maps must hold integer class ids, got a complex tensor")
            if value.is_floating_point():
                _integral_float_check(bool(torch.isfinite(value).all() and torch.equal(value, value.round())))
                return value.long()
            return value
        value = value.detach()
        value = value.numpy() if value.dtype not in (torch.bfloat16, torch.float16) else value.double().numpy()
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind == "b":
        return array.view(np.uint8)
    if kind == "f":
        _integral_float_check(bool(np.isfinite(array).all() and np.array_equal(array, np.round(array))))
        return array.astype(np.int64)
    if kind == "u" and array.dtype.itemsize == 8:
        if array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ValueError("segmentation maps hold ids beyond the int64 range")
        return array.astype(np.int64)
    if kind not in "iu":
        raise TypeError(f"segmentation maps must hold integer class ids, got dtype {array.dtype}")
    return array


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = _as_ids(value)
    # torch has few unsigned types: wider ones travel as int64, which holds every id `_as_ids` accepts.
    return torch.from_numpy(array if array.dtype in (np.uint8, np.int8, np.int16, np.int32, np.int64)
                            else array.astype(np.int64))


def map_references(
    references: np.ndarray, label_map: Mapping[int, int] | None = None, reduce_labels: bool = False
) -> np.ndarray:
    """The standard metric's reference rules on int64 values: ``label_map`` then ``reduce_labels``.

    ``label_map`` is applied as the standard metric applies it, one entry after the other on the already mapped
    values (so ``{1: 2, 2: 3}`` sends 1 to 3); ``reduce_labels`` sends 0 to 255, lowers every other id by one and
    keeps 255.
    """
    references = np.array(references, dtype=np.int64)
    if label_map:
        for old_id, new_id in label_map.items():
            references[references == int(old_id)] = int(new_id)
    if reduce_labels:
        references[references == 0] = 255
        references = references - 1
        references[references == 254] = 255
    return references


def _grown_size(current: int, needed: int) -> int:
    if needed <= current:
        return current
    return min(DENSE_LIMIT, max(needed, 2 * current, 64))


class PairCounts:
    """Pixel counts per distinct (reference value, prediction value) pair, over any number of maps.

    Attributes:
        maps: number of maps counted.
    """

    def __init__(self) -> None:
        self._dense = np.zeros((0, 0), dtype=np.int64)
        self._bytes: np.ndarray | None = None  # counts of uint8 maps, flat index reference * 256 + prediction
        self._sparse: dict[tuple[int, int], int] = {}
        self.maps = 0

    def _fold_bytes(self) -> None:
        if self._bytes is not None:
            bytes_table, self._bytes = self._bytes, None
            self._add_dense(bytes_table.reshape(256, 256))

    # -- counting ---------------------------------------------------------------------------------------------

    def _add_dense(self, block: np.ndarray) -> None:
        rows, cols = block.shape
        if rows > self._dense.shape[0] or cols > self._dense.shape[1]:
            grown = np.zeros(
                (_grown_size(self._dense.shape[0], rows), _grown_size(self._dense.shape[1], cols)), dtype=np.int64
            )
            grown[: self._dense.shape[0], : self._dense.shape[1]] = self._dense
            self._dense = grown
        self._dense[:rows, :cols] += block

    def _add_sparse(self, references: np.ndarray, predictions: np.ndarray, counts: np.ndarray) -> None:
        for key in zip(references.tolist(), predictions.tolist(), counts.tolist()):
            pair = (key[0], key[1])
            self._sparse[pair] = self._sparse.get(pair, 0) + key[2]

    def _add_outliers(self, references: np.ndarray, predictions: np.ndarray) -> None:
        """Count pixels with a value outside the dense window (int64 arrays of those pixels only)."""
        if references.size == 0:
            return
        r_low, r_high = int(references.min()), int(references.max())
        p_low, p_high = int(predictions.min()), int(predictions.max())
        span = p_high - p_low + 1
        if (r_high - r_low + 1) * span < 2**62:
            keys, counts = np.unique((references - r_low) * span + (predictions - p_low), return_counts=True)
            self._add_sparse(keys // span + r_low, keys % span + p_low, counts)
        else:
            pairs, counts = np.unique(np.stack([references, predictions], axis=1), axis=0, return_counts=True)
            self._add_sparse(pairs[:, 0], pairs[:, 1], counts)

    def _count_numpy(self, references: np.ndarray, predictions: np.ndarray) -> None:
        references, predictions = references.reshape(-1), predictions.reshape(-1)
        if references.size == 0:
            return
        if references.dtype == np.uint8 and predictions.dtype == np.uint8:
            # Label PNGs: a uint16 index and an unbuffered add into a 256 x 256 table that stays in cache (faster
            # here than bincount, which first converts the index to intp and allocates its output).
            flat = (references.astype(np.uint16) << 8) | predictions
            if self._bytes is None:
                self._bytes = np.zeros(1 << 16, dtype=np.int64)
            np.add.at(self._bytes, flat, 1)
            return
        r_low, r_high = int(references.min()), int(references.max())
        p_low, p_high = int(predictions.min()), int(predictions.max())
        if r_low >= 0 and p_low >= 0 and r_high < DENSE_LIMIT and p_high < DENSE_LIMIT:
            rows, cols = r_high + 1, p_high + 1
            index_type = np.uint16 if rows * cols <= 1 << 16 else np.int32
            flat = references.astype(index_type, copy=False) * index_type(cols)
            flat += predictions.astype(index_type, copy=False)
            self._add_dense(np.bincount(flat, minlength=rows * cols).reshape(rows, cols))
            return
        rows = min(max(r_high, 0), DENSE_LIMIT - 1) + 1
        cols = min(max(p_high, 0), DENSE_LIMIT - 1) + 1
        inside = (references >= 0) & (references < DENSE_LIMIT) & (predictions >= 0) & (predictions < DENSE_LIMIT)
        # Pixels outside the window go to one extra bin here and are counted exactly below.
        with np.errstate(over="ignore"):
            flat = np.where(inside, references.astype(np.int64) * cols + predictions, rows * cols)
        self._add_dense(np.bincount(flat, minlength=rows * cols + 1)[: rows * cols].reshape(rows, cols))
        outside = ~inside
        self._add_outliers(references[outside].astype(np.int64), predictions[outside].astype(np.int64))

    def _count_torch(self, references: torch.Tensor, predictions: torch.Tensor) -> None:
        references, predictions = references.reshape(-1), predictions.reshape(-1)
        if references.numel() == 0:
            return
        if references.dtype == torch.uint8 and predictions.dtype == torch.uint8:
            flat = (references.to(torch.int32) << 8) | predictions.to(torch.int32)
            self._add_dense(torch.bincount(flat, minlength=1 << 16).view(256, 256).cpu().numpy())
            return
        references, predictions = references.long(), predictions.long()
        r_low, r_high, p_low, p_high = torch.stack(
            [references.min(), references.max(), predictions.min(), predictions.max()]
        ).tolist()
        rows = min(max(r_high, 0), DENSE_LIMIT - 1) + 1
        cols = min(max(p_high, 0), DENSE_LIMIT - 1) + 1
        if r_low >= 0 and p_low >= 0 and r_high < DENSE_LIMIT and p_high < DENSE_LIMIT:
            counts = torch.bincount(references * cols + predictions, minlength=rows * cols)
            self._add_dense(counts.view(rows, cols).cpu().numpy())
            return
        inside = (references >= 0) & (references < DENSE_LIMIT) & (predictions >= 0) & (predictions < DENSE_LIMIT)
        flat = torch.where(inside, references * cols + predictions, rows * cols)
        counts = torch.bincount(flat, minlength=rows * cols + 1)[: rows * cols]
        self._add_dense(counts.view(rows, cols).cpu().numpy())
        outside = ~inside
        self._add_outliers(references[outside].cpu().numpy(), predictions[outside].cpu().numpy())

    @torch.no_grad()
    def update(
        self, predictions: SegmentationMaps, references: SegmentationMaps, device: torch.device | None = None
    ) -> PairCounts:
        """Count the pixels of some maps; the maps themselves are not kept.

        Args:
            predictions: class ids, a tensor/array ``(H, W)`` or ``(B, H, W)``, or a list of ``(H_i, W_i)`` maps
                (tensors, arrays or nested lists) whose sizes may differ. Integer, boolean or integral floating
                values.
            references: the matching reference values, in the same layout and shapes.
            device: where to count (``None``: on the predictions' device; CUDA tensors are counted there).

        Returns:
            ``self``.
        """
        accelerator = device is not None and torch.device(device).type != "cpu"
        for prediction, reference in iter_map_batches(predictions, references):
            if accelerator:
                prediction = _to_tensor(prediction).to(device)
            prediction = _as_ids(prediction)
            if isinstance(prediction, torch.Tensor):  # on an accelerator: the reference joins it there
                reference = _as_ids(_to_tensor(reference).to(prediction.device))
            else:
                reference = _as_ids(reference.cpu() if isinstance(reference, torch.Tensor) else reference)
            if tuple(prediction.shape) != tuple(reference.shape):
                raise ValueError(
                    f"prediction and reference shapes differ: {tuple(prediction.shape)} vs {tuple(reference.shape)}"
                )
            self.maps += int(prediction.shape[0]) if prediction.ndim == 3 else 1
            if isinstance(prediction, torch.Tensor):
                self._count_torch(reference, prediction)
            else:
                self._count_numpy(reference, prediction)
        return self

    def add_pairs(self, references: Any, predictions: Any, counts: Any, maps: int = 0) -> PairCounts:
        """Add counts given as three equally long integer sequences (as `pairs` returns them)."""
        references = np.asarray(references, dtype=np.int64).reshape(-1)
        predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if not (len(references) == len(predictions) == len(counts)):
            raise ValueError("pair counts need equally long reference, prediction and count arrays")
        if (counts < 0).any():
            raise ValueError("pair counts cannot be negative")
        inside = (references >= 0) & (references < DENSE_LIMIT) & (predictions >= 0) & (predictions < DENSE_LIMIT)
        if inside.any():
            rows, cols = int(references[inside].max()) + 1, int(predictions[inside].max()) + 1
            block = np.zeros((rows, cols), dtype=np.int64)
            np.add.at(block, (references[inside], predictions[inside]), counts[inside])
            self._add_dense(block)
        self._add_sparse(references[~inside], predictions[~inside], counts[~inside])
        self.maps += int(maps)
        return self

    def merge(self, other: PairCounts) -> PairCounts:
        """Add the counts of `other` to these, in place; returns ``self``."""
        if not isinstance(other, PairCounts):
            raise TypeError(f"can only merge PairCounts, got {type(other)}")
        if other._bytes is not None:
            self._add_dense(other._bytes.reshape(256, 256))
        if other._dense.size:
            self._add_dense(other._dense)
        for pair, count in other._sparse.items():
            self._sparse[pair] = self._sparse.get(pair, 0) + count
        self.maps += other.maps
        return self

    def reset(self) -> None:
        """Forget every count."""
        self.__init__()

    # -- reading ----------------------------------------------------------------------------------------------

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(references, predictions, counts)``: int64 arrays, one entry per distinct pair with a nonzero count."""
        self._fold_bytes()
        rows, cols = np.nonzero(self._dense)
        counts = self._dense[rows, cols]
        if self._sparse:
            keys = sorted(k for k, v in self._sparse.items() if v)
            rows = np.concatenate([rows, np.array([k[0] for k in keys], dtype=np.int64)])
            cols = np.concatenate([cols, np.array([k[1] for k in keys], dtype=np.int64)])
            counts = np.concatenate([counts, np.array([self._sparse[k] for k in keys], dtype=np.int64)])
        return rows.astype(np.int64), cols.astype(np.int64), counts.astype(np.int64)

    @property
    def pixels(self) -> int:
        """Pixels counted so far."""
        extra = 0 if self._bytes is None else int(self._bytes.sum())
        return int(self._dense.sum()) + extra + sum(self._sparse.values())

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the counts."""
        extra = 0 if self._bytes is None else int(self._bytes.nbytes)
        return int(self._dense.nbytes) + extra + 100 * len(self._sparse)

    def class_counts(
        self,
        num_labels: int,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        label_map: Mapping[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The standard metric's view of the counts under some settings.

        Returns:
            ``(matrix, reference_only, prediction_only)``, int64: ``matrix[r, p]`` (``(K, K)``) counts kept pixels
            with reference ``r`` and prediction ``p`` both in ``[0, K)``; ``reference_only[r]`` those whose
            prediction is outside that range; ``prediction_only[p]`` those whose kept reference is outside it.
        """
        K = int(num_labels)
        references, predictions, counts = self.pairs()
        references = map_references(references, label_map, reduce_labels)
        if ignore_index is not None:
            keep = references != int(ignore_index)
            references, predictions, counts = references[keep], predictions[keep], counts[keep]
        reference_in = (references >= 0) & (references < K)
        prediction_in = (predictions >= 0) & (predictions < K)
        matrix = np.zeros((K, K), dtype=np.int64)
        both = reference_in & prediction_in
        np.add.at(matrix, (references[both], predictions[both]), counts[both])
        reference_only = np.zeros(K, dtype=np.int64)
        np.add.at(reference_only, references[reference_in & ~prediction_in], counts[reference_in & ~prediction_in])
        prediction_only = np.zeros(K, dtype=np.int64)
        np.add.at(prediction_only, predictions[~reference_in & prediction_in], counts[~reference_in & prediction_in])
        return matrix, reference_only, prediction_only

    def reference_values(self) -> dict[int, int]:
        """Pixels per distinct reference value (before any setting is applied)."""
        references, _, counts = self.pairs()
        values, inverse = np.unique(references, return_inverse=True)
        totals = np.zeros(len(values), dtype=np.int64)
        np.add.at(totals, inverse, counts)
        return dict(zip(values.tolist(), totals.tolist()))

    # -- state and processes ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counts as CPU int64 tensors (``references``, ``predictions``, ``counts``, ``maps``)."""
        references, predictions, counts = self.pairs()
        return {
            "references": torch.from_numpy(references), "predictions": torch.from_numpy(predictions),
            "counts": torch.from_numpy(counts), "maps": torch.tensor([self.maps], dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PairCounts:
        """The counts saved by `state_dict`."""
        try:
            maps = int(np.asarray(state.get("maps", [0])).reshape(-1)[0])
            return cls().add_pairs(state["references"], state["predictions"], state["counts"], maps=maps)
        except KeyError as error:
            raise ValueError(f"pair counts state lacks {error.args[0]!r}") from None

    def all_reduce(self, group: Any | None = None) -> PairCounts:
        """Sum the counts over all processes with ``torch.distributed`` (no-op when it is not initialised).

        Every process of `group` must call it; afterwards every process holds the total.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return self
        world = dist.get_world_size(group)
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        references, predictions, counts = self.pairs()
        packed = torch.from_numpy(np.stack([references, predictions, counts])).to(device)
        size = torch.tensor([packed.shape[1], self.maps], dtype=torch.int64, device=device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size, group=group)
        longest = max(int(s[0]) for s in sizes)
        padded = torch.zeros(3, longest, dtype=torch.int64, device=device)
        padded[:, : packed.shape[1]] = packed
        gathered = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded, group=group)
        self.reset()
        for block, (length, maps) in zip(gathered, (s.tolist() for s in sizes)):
            block = block[:, :length].cpu().numpy()
            self.add_pairs(block[0], block[1], block[2], maps=maps)
        return self

    def __repr__(self) -> str:
        return f"PairCounts(maps={self.maps}, pixels={self.pixels}, distinct_pairs={len(self.pairs()[2])})"
