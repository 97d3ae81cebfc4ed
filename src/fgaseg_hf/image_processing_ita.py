"""Image processor for ITA: the original's test-time preprocessing, training targets from label maps, and
semantic maps / per-class segments from `ITAOutput`.

Preprocessing, as detectron2's test pipeline and `FCCLIP.forward` do it:
1. `ResizeShortestEdge(min_size_test, max_size_test)`: the shortest edge becomes `shortest_edge` unless the longest
   would exceed `max_size` (sizes rounded half up). 8-bit images are resized as uint8 PIL images (bilinear), other
   images (16-bit, float) with torch's bilinear interpolation (`align_corners=False`), as detectron2's
   `ResizeTransform` does for each dtype.
2. `(image - pixel_mean) / pixel_std` in 0-255 units.
3. Zero padding bottom/right (after normalisation) to the batch's largest size rounded up to `size_divisibility`
   (`ImageList.from_tensors`), with `pixel_mask` 1 on the image and 0 on the padding.

Label maps (training): resized with the image (nearest), then one binary mask per class present other than the
ignore index, classes sorted (`MaskFormerSemanticDatasetMapper`), zero padded to the canvas (`prepare_targets`).

Post-processing follows `ITAConfig.postprocess_order`: "after" crops and resizes the canvas class scores
(`outputs.logits`), "before" crops and resizes the query masks first, then takes the class x mask product. The
argmax maps are computed in row bands, never as a full `(K, H, W)` tensor at the target size.

Travels with saved models (remote code): imports only its siblings and installed libraries.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .image_processing_fgaseg import (
    BAND_ELEMENTS,
    as_image_list,
    bilinear_matrix,
    reduce_label_ids,
    to_label_array,
    to_rgb_array,
)
from .ita_inference import crop_and_resize, semantic_inference

ITA_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
ITA_PIXEL_STD = [68.5005327, 66.6321579, 70.32316305]
POSTPROCESS_ORDERS = ("after", "before")


def resized_shape(height: int, width: int, shortest_edge: int, max_size: int) -> tuple[int, int]:
    """detectron2's `ResizeShortestEdge.get_output_shape`: `(new_height, new_width)`."""
    scale = shortest_edge / min(height, width)
    new_height, new_width = (shortest_edge, scale * width) if height < width else (scale * height, shortest_edge)
    if max(new_height, new_width) > max_size:
        shrink = max_size / max(new_height, new_width)
        new_height, new_width = new_height * shrink, new_width * shrink
    return int(new_height + 0.5), int(new_width + 0.5)


def semantic_to_mask_targets(label: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's semantic dataset mapper: a `(H, W)` class-id map -> `(n, H, W)` float binary masks, one per
    class present other than `ignore_index` (ascending ids), and their `(n,)` class ids."""
    classes = torch.unique(label)
    classes = classes[classes != ignore_index]
    masks = (label[None] == classes[:, None, None]).float()
    return masks, classes.long()


def _get(outputs, name: str):
    """A field of an `ITAOutput`, a plain `ModelOutput` or a dict (None when absent)."""
    if hasattr(outputs, "get"):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _sizes(value, count: int) -> list[tuple[int, int]] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1, 2).tolist()
    elif len(value) == 2 and all(isinstance(v, int) for v in value):
        # One image's size: what a pipeline's batch_size > 1 leaves of the per-image list after unbatching.
        value = [value]
    sizes = [(int(h), int(w)) for h, w in value]
    if len(sizes) != count:
        raise ValueError(f"got {len(sizes)} sizes for {count} images")
    return sizes


class ITAImageProcessor(BaseImageProcessor):
    r"""
    Prepares images (and optional label maps) for [`ITAModel`] and turns its outputs into label maps.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): the test-time shortest-edge resize.
        shortest_edge (`int`, *optional*, defaults to 800): [INPUT.MIN_SIZE_TEST].
        max_size (`int`, *optional*, defaults to 1333): [INPUT.MAX_SIZE_TEST].
        pixel_mean / pixel_std (`list[float]`, *optional*): normalisation in 0-255 units [MODEL.PIXEL_MEAN/STD].
        size_divisibility (`int`, *optional*, defaults to 32): padding multiple of the batch canvas.
        postprocess_order (`str`, *optional*, defaults to "after"): see the module docs (`ITAConfig`).
        do_reduce_labels (`bool`, *optional*, defaults to `False`): label 0 becomes the ignore index and every other
            label is decreased by one (ADE20K's raw annotations).
        ignore_index (`int`, *optional*, defaults to 255): label of unlabelled pixels.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    # The output fields the post-processing reads (what a pipeline keeps of the model outputs).
    post_process_input_names = ("logits", "mask_class_logits", "masks_queries_logits", "image_sizes")

    def __init__(
        self,
        do_resize: bool = True,
        shortest_edge: int = 800,
        max_size: int = 1333,
        pixel_mean: list[float] | None = None,
        pixel_std: list[float] | None = None,
        size_divisibility: int = 32,
        postprocess_order: str = "after",
        do_reduce_labels: bool = False,
        ignore_index: int = 255,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_resize = bool(do_resize)
        self.shortest_edge = int(shortest_edge)
        self.max_size = int(max_size)
        self.pixel_mean = [float(v) for v in (pixel_mean if pixel_mean is not None else ITA_PIXEL_MEAN)]
        self.pixel_std = [float(v) for v in (pixel_std if pixel_std is not None else ITA_PIXEL_STD)]
        self.size_divisibility = int(size_divisibility)
        self.postprocess_order = postprocess_order
        self.do_reduce_labels = bool(do_reduce_labels)
        self.ignore_index = int(ignore_index)
        self._check_order(postprocess_order)
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or self.shortest_edge < 1 or self.max_size < 1:
            raise ValueError("pixel_mean / pixel_std need 3 values and shortest_edge / max_size must be positive")

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "ITAImageProcessor":
        """The processor matching an `ITAConfig` (test size, normalisation, padding, post-processing order)."""
        values = dict(
            shortest_edge=config.min_size_test, max_size=config.max_size_test, pixel_mean=config.pixel_mean,
            pixel_std=config.pixel_std, size_divisibility=config.size_divisibility,
            postprocess_order=config.postprocess_order,
        )
        values.update(kwargs)
        return cls(**values)

    @staticmethod
    def _check_order(order: str) -> None:
        if order not in POSTPROCESS_ORDERS:
            raise ValueError(f"postprocess_order must be one of {POSTPROCESS_ORDERS}, got {order!r}")

    # ----------------------------------------------------------------- preprocessing
    def resized_size(self, height: int, width: int, do_resize: bool | None = None) -> tuple[int, int]:
        """The model-input size of an image of `(height, width)`."""
        if not (self.do_resize if do_resize is None else do_resize):
            return height, width
        return resized_shape(height, width, self.shortest_edge, self.max_size)

    def _resize_image(self, array: np.ndarray, do_resize: bool) -> torch.Tensor:
        """`(H, W, 3)` float 0..255 -> `(3, h, w)` float32 at `resized_size`."""
        height, width = array.shape[:2]
        size = self.resized_size(height, width, do_resize)
        if np.array_equal(array, np.round(array)):
            # 8-bit content: detectron2 resizes uint8 images with PIL.
            image = Image.fromarray(array.astype(np.uint8), mode="RGB")
            if (height, width) != size:
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        if (height, width) == size:
            return tensor.contiguous()
        return F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.pixel_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=torch.float32).view(3, 1, 1)
        return (image - mean) / std

    def canvas_size(self, sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """The batch canvas: largest height and width, rounded up to `size_divisibility`."""
        height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        d = self.size_divisibility
        if d > 1:
            height, width = -(-height // d) * d, -(-width // d) * d
        return height, width

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        return_tensors: str | None = "pt",
        do_resize: bool | None = None,
        do_reduce_labels: bool | None = None,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list (PIL images in any mode, numpy arrays or torch tensors, `(H, W)`,
                `(H, W, C)` or `(C, H, W)`; integer or float pixels).
            segmentation_maps: optional label maps of the images' sizes (class ids, `ignore_index` unlabelled).
        Returns:
            `BatchFeature` with `pixel_values` `(B, 3, H, W)`, `pixel_mask` `(B, H, W)` and `original_sizes`
            `(B, 2)` (each input image's `(H, W)`: the model passes it on to its output, where the `post_process_*`
            methods take it as the default `target_sizes`); with maps, `labels`
            `(B, H, W)` (class ids, `ignore_index` on padding) and the per-image lists `mask_labels` (`(n_i, H, W)`
            float binary masks) and `class_labels` (`(n_i,)`) derived from them.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        do_resize = self.do_resize if do_resize is None else bool(do_resize)
        arrays = [to_rgb_array(image) for image in as_image_list(images)]
        if not arrays:
            raise ValueError("no images given")
        resized = [self._normalise(self._resize_image(array, do_resize)) for array in arrays]
        label_maps = None
        if segmentation_maps is not None:
            reduce = self.do_reduce_labels if do_reduce_labels is None else do_reduce_labels
            label_maps = self._resize_labels(as_image_list(segmentation_maps), arrays, reduce, do_resize)
        height, width = self.canvas_size([tuple(image.shape[1:]) for image in resized])
        pixel_values = torch.zeros(len(resized), 3, height, width)
        pixel_mask = torch.zeros(len(resized), height, width, dtype=torch.long)
        for index, image in enumerate(resized):
            pixel_values[index, :, : image.shape[1], : image.shape[2]] = image
            pixel_mask[index, : image.shape[1], : image.shape[2]] = 1
        original_sizes = torch.tensor([array.shape[:2] for array in arrays], dtype=torch.long)
        data = {"pixel_values": pixel_values, "pixel_mask": pixel_mask, "original_sizes": original_sizes}
        if label_maps is not None:
            data["labels"], data["mask_labels"], data["class_labels"] = self._targets(label_maps, (height, width))
        if return_tensors == "np":
            data = {
                key: [v.numpy() for v in value] if isinstance(value, list) else value.numpy() for key, value in data.items()
            }
        return BatchFeature(data=data)

    def _resize_labels(self, maps, arrays, reduce: bool, do_resize: bool) -> list[torch.Tensor]:
        if len(maps) != len(arrays):
            raise ValueError(f"got {len(arrays)} images but {len(maps)} segmentation maps")
        labels = []
        for index, (label_map, array) in enumerate(zip(maps, arrays)):
            label = to_label_array(label_map)
            if tuple(label.shape) != tuple(array.shape[:2]):
                raise ValueError(
                    f"segmentation map {index} has size {tuple(label.shape)} but its image has {tuple(array.shape[:2])}"
                )
            if reduce:
                label = reduce_label_ids(label, self.ignore_index)
            size = self.resized_size(*label.shape, do_resize)
            tensor = torch.from_numpy(label)
            if tuple(label.shape) != size:
                # detectron2 resizes the (float64) label map with torch's nearest interpolation.
                tensor = F.interpolate(tensor[None, None].double(), size=size, mode="nearest")[0, 0].long()
            labels.append(tensor)
        return labels

    def _targets(self, labels: list[torch.Tensor], canvas: tuple[int, int]):
        """Per image: the canvas-padded semantic map (`ignore_index` outside the image) and, from it, one binary mask
        per class present."""
        semantic = torch.full((len(labels), *canvas), self.ignore_index, dtype=torch.long)
        for index, label in enumerate(labels):
            semantic[index, : label.shape[0], : label.shape[1]] = label
        mask_labels, class_labels = zip(*(semantic_to_mask_targets(label, self.ignore_index) for label in semantic))
        return semantic, list(mask_labels), list(class_labels)

    def collate(self, items: list[dict]) -> dict:
        """Merge inputs preprocessed separately (`pixel_values` `(n, 3, h, w)`, `pixel_mask` `(n, h, w)` each) into
        one batch on a common canvas, zero padded bottom/right: the same batch `preprocess` gives for all images."""
        canvas = self.canvas_size([tuple(item["pixel_values"].shape[-2:]) for item in items])
        total = sum(item["pixel_values"].shape[0] for item in items)
        first = items[0]["pixel_values"]
        pixel_values = first.new_zeros((total, 3, *canvas))
        pixel_mask = torch.zeros(total, *canvas, dtype=torch.long, device=first.device)
        row = 0
        for item in items:
            values = item["pixel_values"]
            count, (height, width) = values.shape[0], values.shape[-2:]
            pixel_values[row : row + count, :, :height, :width] = values
            mask = item.get("pixel_mask")
            pixel_mask[row : row + count, :height, :width] = 1 if mask is None else mask
            row += count
        return {"pixel_values": pixel_values, "pixel_mask": pixel_mask}

    # ----------------------------------------------------------------- post-processing
    def _images(self, outputs, target_sizes, postprocess_order):
        """Per image: index, size on the canvas, output size; and the checked order."""
        order = postprocess_order or self.postprocess_order
        self._check_order(order)
        logits = _get(outputs, "logits")
        if logits is None:
            raise ValueError("ITA post-processing needs the model's inference outputs (`logits`); got none")
        count, canvas = logits.shape[0], tuple(logits.shape[-2:])
        image_sizes = _sizes(_get(outputs, "image_sizes"), count) or [canvas] * count
        # Default: the input images' sizes, when the model passed on the `original_sizes` of `preprocess`.
        targets = _sizes(target_sizes, count) or _sizes(_get(outputs, "original_sizes"), count) or image_sizes
        if order == "before" and (_get(outputs, "mask_class_logits") is None or _get(outputs, "masks_queries_logits") is None):
            raise ValueError('postprocess_order "before" needs `mask_class_logits` and `masks_queries_logits`')
        return [(i, image_sizes[i], targets[i]) for i in range(count)], order

    def post_process_probabilities(self, outputs, target_sizes=None, postprocess_order=None) -> list[torch.Tensor]:
        """Per image, the original's semantic scores `(K, H, W)` at `target_sizes` (default: `outputs.original_sizes`,
        the input images' sizes; without them, each image's size on the canvas): sum over queries of class
        probability x mask probability, which the original argmaxes (the same values as the model's
        `semantic_maps`)."""
        images, order = self._images(outputs, target_sizes, postprocess_order)
        logits = _get(outputs, "logits")
        maps = []
        for index, size, target in images:
            if order == "after":
                maps.append(crop_and_resize(logits[index].float(), size, target))
            else:
                masks = F.interpolate(
                    _get(outputs, "masks_queries_logits")[index : index + 1].float(), size=tuple(logits.shape[-2:]),
                    mode="bilinear", align_corners=False,
                )[0]
                maps.append(semantic_inference(_get(outputs, "mask_class_logits")[index].float(), crop_and_resize(masks, size, target)))
        return maps

    def _argmax(self, outputs, index, size, target, order) -> tuple[torch.Tensor, torch.Tensor]:
        """Label map `(H, W)` and each class's summed score over its own pixels, in row bands."""
        logits = _get(outputs, "logits")
        height, width = target
        canvas = tuple(logits.shape[-2:])
        if order == "after":
            scores = logits[index, :, : size[0], : size[1]].float()
            rows = bilinear_matrix(height, size[0]).to(scores.device)
            cols = bilinear_matrix(width, size[1]).to(scores.device)
            channels = scores.shape[0]

            def block(start, stop):
                return torch.einsum("kYx,Xx->kYX", torch.einsum("Yy,kyx->kYx", rows[start:stop], scores), cols)
        else:
            masks = _get(outputs, "masks_queries_logits")[index].float()  # (Q, h/4, w/4)
            class_probs = F.softmax(_get(outputs, "mask_class_logits")[index].float(), dim=-1)[..., :-1]  # (Q, K)
            # Upsampling to the canvas, cropping to the image and resizing to the target: one matrix per axis.
            rows = bilinear_matrix(height, size[0]) @ bilinear_matrix(canvas[0], masks.shape[1])[: size[0]]
            cols = bilinear_matrix(width, size[1]) @ bilinear_matrix(canvas[1], masks.shape[2])[: size[1]]
            rows, cols = rows.to(masks.device), cols.to(masks.device)
            channels = max(masks.shape[0], class_probs.shape[1])

            def block(start, stop):
                resized = torch.einsum("qYx,Xx->qYX", torch.einsum("Yy,qyx->qYx", rows[start:stop], masks), cols)
                return torch.einsum("qk,qYX->kYX", class_probs, resized.sigmoid())

        band = max(1, BAND_ELEMENTS // max(1, channels * width))
        labels = torch.empty(height, width, dtype=torch.long, device=logits.device)
        score_sums = torch.zeros(logits.shape[1], dtype=torch.float64, device=logits.device)
        for start in range(0, height, band):
            best, label = block(start, start + band).max(dim=0)
            labels[start : start + band] = label
            score_sums.index_add_(0, label.flatten(), best.flatten().double())
        return labels, score_sums

    def post_process_semantic_segmentation(self, outputs, target_sizes=None, postprocess_order=None) -> list[torch.Tensor]:
        """`(H, W)` class-id maps (`torch.long`), one per image, at `target_sizes` (default: as
        `post_process_probabilities`): the argmax of `post_process_probabilities`, computed in row bands."""
        images, order = self._images(outputs, target_sizes, postprocess_order)
        return [self._argmax(outputs, index, size, target, order)[0] for index, size, target in images]

    def post_process_panoptic_segmentation(
        self,
        outputs,
        threshold: float | None = None,
        mask_threshold: float | None = None,
        overlap_mask_area_threshold: float | None = None,
        label_ids_to_fuse=None,
        target_sizes=None,
        postprocess_order=None,
    ) -> list[dict]:
        """Semantic segmentation as segments, one per class present, so that the image-segmentation pipeline
        reports a score per class: `{"segmentation": (H, W) class ids, "segments_info": [{"id", "label_id",
        "was_fused", "score"}]}` with `id == label_id` and `score` the class's mean semantic score (see
        `post_process_probabilities`) over its pixels. The Mask2Former-style thresholds are accepted for pipeline
        compatibility and not used."""
        images, order = self._images(outputs, target_sizes, postprocess_order)
        results = []
        for index, size, target in images:
            labels, score_sums = self._argmax(outputs, index, size, target, order)
            counts = torch.bincount(labels.flatten(), minlength=score_sums.shape[0])
            info = [
                {"id": c, "label_id": c, "was_fused": False, "score": round(float(score_sums[c] / counts[c]), 6)}
                for c in counts.nonzero().flatten().tolist()
            ]
            results.append({"segmentation": labels, "segments_info": info})
        return results


__all__ = ["ITAImageProcessor", "resized_shape", "semantic_to_mask_targets"]
