"""Batch-invariant inference of ITA / FC-CLIP: the outputs of image groups that ran on their own padded canvases,
placed back into one batch.

Travels with saved models (remote code): imports only installed libraries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to(tensor: torch.Tensor, size: tuple[int, int], edge: bool) -> torch.Tensor:
    """Pad the last two dims bottom/right to `size`: zeros, or edge replication (`edge`)."""
    pad_h, pad_w = size[0] - tensor.shape[-2], size[1] - tensor.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return tensor
    if edge:
        flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
        return F.pad(flat, (0, pad_w, 0, pad_h), mode="replicate").reshape(*tensor.shape[:-2], *size)
    return F.pad(tensor, (0, pad_w, 0, pad_h))


def merge_batch(values: list, members: list, total: int, edge: bool):
    """Place per-group batch tensors (first dim = group members) into one batch, padding spatial dims."""
    first = values[0]
    if isinstance(first, tuple):
        return tuple(merge_batch([v[i] for v in values], members, total, edge) for i in range(len(first)))
    spatial = first.dim() >= 4
    size = tuple(max(v.shape[-2 + i] for v in values) for i in range(2)) if spatial else None
    result = first.new_zeros((total, *(pad_to(first, size, edge) if spatial else first).shape[1:]))
    for value, rows in zip(values, members):
        result[torch.tensor(rows, device=result.device)] = pad_to(value, size, edge) if spatial else value
    return result


def merge_groups(parts, total: int, batched: tuple[str, ...], edge_padded: tuple[str, ...]) -> dict:
    """`parts`: `(member indices, output dict)` per group -> one output dict for the `total` images. Fields in
    `batched` are per-image tensors (those in `edge_padded` padded by edge replication), `semantic_maps` a per-image
    list; any other field is shared and taken from the first group."""
    merged = {}
    for key in parts[0][1]:
        if key == "semantic_maps":
            maps = [None] * total
            for members, out in parts:
                for row, value in zip(members, out[key]):
                    maps[row] = value
            merged[key] = maps
        elif key in batched:
            merged[key] = merge_batch([out[key] for _, out in parts], [m for m, _ in parts], total, key in edge_padded)
        else:
            merged[key] = parts[0][1][key]
    return merged


__all__ = ["merge_batch", "merge_groups", "pad_to"]
