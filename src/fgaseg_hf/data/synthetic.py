"""Procedural "synthetic scenes": a small outdoor semantic-segmentation dataset made from nothing.

Each scene has a horizon with sky above (gradient and clouds), ground bands and irregular patches of grass,
sand and water, sometimes a road in perspective, buildings with windows standing on the horizon, and trees
that occlude what is behind them. Every class gets a per-scene colour and its own texture; the whole image
then gets an illumination change, a slight blur and Gaussian noise, so colour alone is not a reliable cue.

Scene ``i`` of a split is drawn from its own random stream derived from ``(seed, split, i)``, so any scene
can be regenerated on its own and validation never repeats training scenes. Only numpy and Pillow are
needed to generate; ``datasets`` is imported only to load a written folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    import datasets

CLASS_NAMES = ["sky", "water", "grass", "sand", "road", "building", "tree"]
SKY, WATER, GRASS, SAND, ROAD, BUILDING, TREE = range(7)
SPLITS = {"train": 0, "validation": 1}
PathLike = str | os.PathLike

# Base colours (RGB in [0, 1]); each scene picks one per class and jitters it.
_PALETTES = {
    SKY: [(0.25, 0.45, 0.85), (0.4, 0.6, 0.9), (0.55, 0.6, 0.7), (0.3, 0.5, 0.75)],
    WATER: [(0.1, 0.3, 0.55), (0.1, 0.4, 0.45), (0.22, 0.35, 0.42), (0.15, 0.3, 0.35)],
    GRASS: [(0.25, 0.5, 0.15), (0.35, 0.55, 0.2), (0.45, 0.5, 0.2), (0.2, 0.42, 0.18)],
    SAND: [(0.85, 0.75, 0.55), (0.78, 0.68, 0.48), (0.9, 0.83, 0.66), (0.75, 0.62, 0.45)],
    ROAD: [(0.35, 0.35, 0.37), (0.45, 0.44, 0.42), (0.26, 0.26, 0.28), (0.4, 0.38, 0.4)],
    BUILDING: [(0.7, 0.35, 0.25), (0.8, 0.75, 0.65), (0.6, 0.6, 0.62), (0.5, 0.6, 0.7), (0.88, 0.87, 0.84)],
    TREE: [(0.12, 0.3, 0.1), (0.2, 0.38, 0.12), (0.3, 0.35, 0.1), (0.15, 0.35, 0.2), (0.55, 0.4, 0.12)],
}


def _colour(rng: np.random.Generator, cls: int, jitter: float = 0.05) -> np.ndarray:
    """A per-scene colour for ``cls``: a palette entry with channel jitter and a brightness change."""
    palette = _PALETTES[cls]
    base = np.asarray(palette[rng.integers(len(palette))], np.float32)
    return np.clip((base + rng.normal(0.0, jitter, 3)) * rng.uniform(0.85, 1.15), 0.0, 1.0).astype(np.float32)


def _resize(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(grid).resize(shape[::-1], Image.Resampling.BICUBIC))


def _noise(
    rng: np.random.Generator, h: int, w: int, cell_h: float, cell_w: float | None = None, octaves: int = 1
) -> np.ndarray:
    """Smooth value noise of shape (h, w), zero mean and unit std: random values on a grid of cells, bicubically
    upsampled. Each further octave halves cell size and amplitude; octaves are summed on ever finer grids (a
    Laplacian-pyramid synthesis), so only the last step resizes to full resolution."""
    cell_w = cell_h if cell_w is None else cell_w
    grid = np.zeros((1, 1), np.float32)
    for i in range(octaves):
        ch, cw = max(cell_h / 2**i, 1.0), max(cell_w / 2**i, 1.0)
        shape = (int(np.ceil(h / ch)) + 2, int(np.ceil(w / cw)) + 2)
        fresh = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.5**i)
        grid = fresh if i == 0 else _resize(grid, shape) + fresh
    up = _resize(grid, (int(grid.shape[0] * ch), int(grid.shape[1] * cw)))[:h, :w]
    return (up - up.mean()) / (up.std() + 1e-6)


class _Ctx:
    """Pixel grids and horizon of the scene being generated, shared by the texture makers."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, horizon: np.ndarray):
        self.rng, self.h, self.w, self.s = rng, h, w, w / 128  # s: feature scale relative to 128 px
        self.yy, self.xx = (g.astype(np.float32) for g in np.mgrid[0:h, 0:w])
        self.horizon = horizon  # horizon height per column, shape (w,)
        self.depth = np.clip((self.yy - horizon) / np.maximum(h - horizon, 1.0), 0.0, 1.0)  # 0 at horizon, 1 at bottom


def _sky(c: _Ctx) -> np.ndarray:
    rng, top = c.rng, _colour(c.rng, SKY)
    haze = np.array([0.95, 0.8, 0.6] if rng.random() < 0.15 else [0.85, 0.88, 0.92], np.float32)
    t = np.clip(c.yy / np.maximum(c.horizon, 1.0), 0.0, 1.0)[..., None] ** 0.8
    sky = top * (1 - t) + (0.4 * top + 0.6 * haze) * t
    if rng.random() < 0.7:  # clouds
        n = _noise(rng, c.h, c.w, (cell := rng.uniform(10, 24) * c.s), 2 * cell, octaves=3)
        alpha = np.clip((n - rng.uniform(-0.3, 1.0)) * 0.8, 0.0, 1.0)[..., None] * rng.uniform(0.5, 0.95)
        cloud = rng.uniform(0.8, 1.0) * (1.0 - 0.25 * np.clip(n - 1.5, 0.0, 1.0))[..., None]
        sky = sky * (1 - alpha) + cloud * alpha
    return sky


def _water(c: _Ctx) -> np.ndarray:
    rng = c.rng
    ripple = _noise(rng, c.h, c.w, rng.uniform(1.0, 2.0) * c.s, rng.uniform(6, 14) * c.s)  # horizontal streaks
    waves = np.sin(2 * np.pi * rng.uniform(2, 5) * np.sqrt(c.depth) * 6 + 1.5 * _noise(rng, c.h, c.w, 8 * c.s))
    tex = _colour(rng, WATER) * (0.9 + 0.25 * (1 - c.depth) + 0.08 * waves + 0.06 * ripple)[..., None]
    glint = np.clip(ripple - rng.uniform(1.0, 1.8), 0.0, 1.0)[..., None]
    return tex * (1 - glint) + np.float32(0.95) * glint


def _grass(c: _Ctx) -> np.ndarray:
    rng = c.rng
    blades = _noise(rng, c.h, c.w, rng.uniform(3, 6) * c.s, 1.0)  # thin vertical streaks
    patches = _noise(rng, c.h, c.w, 20 * c.s, octaves=3)[..., None]
    tex = _colour(rng, GRASS) * (1 + rng.uniform(0.1, 0.2) * blades[..., None] + 0.08 * patches)
    return tex + np.float32([0.05, 0.03, -0.02]) * patches  # yellowish / lusher patches


def _sand(c: _Ctx) -> np.ndarray:
    rng, angle = c.rng, c.rng.uniform(-0.6, 0.6)
    dunes = np.sin((c.xx * np.sin(angle) + c.yy * np.cos(angle)) * rng.uniform(0.3, 0.7) / c.s)
    grain = rng.standard_normal((c.h, c.w), dtype=np.float32) * rng.uniform(0.04, 0.08)
    patches = _noise(rng, c.h, c.w, 24 * c.s, octaves=3)
    return _colour(rng, SAND) * (1 + 0.05 * dunes + grain + 0.06 * patches)[..., None]


def _road(c: _Ctx) -> np.ndarray:
    grain = c.rng.standard_normal((c.h, c.w), dtype=np.float32) * 0.04
    return _colour(c.rng, ROAD, 0.02) * (1 + grain + 0.07 * _noise(c.rng, c.h, c.w, 12 * c.s, octaves=2))[..., None]


def _paint_building(c: _Ctx, img: np.ndarray, label: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> None:
    rng, s = c.rng, c.s
    ly, lx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
    facade = _colour(rng, BUILDING)
    tex = facade * (1 + 0.05 * rng.standard_normal((y1 - y0, x1 - x0, 1)) - 0.1 * ly[..., None] / max(y1 - y0, 1))
    cw, ch = rng.uniform(4, 9) * s, rng.uniform(5, 10) * s
    ww, wh = cw * rng.uniform(0.4, 0.7), ch * rng.uniform(0.4, 0.65)
    ox = rng.uniform(0.5, 1.5) * (cw - ww)
    ix, iy = ((lx - ox) // cw).astype(int), (ly // ch).astype(int)
    inside = ((lx - ox) % cw < ww) & (ly % ch < wh) & (lx >= ox) & (lx < x1 - x0 - cw / 2) & (ly >= ch * 0.6)
    lit = rng.random((iy.max() + 2, ix.max() + 2)) < rng.uniform(0.0, 0.4)
    dark = np.float32([0.12, 0.16, 0.25]) * rng.uniform(0.7, 1.5) + 0.04 * rng.standard_normal(lit.shape + (3,))
    win = np.where(lit[..., None], np.float32([0.95, 0.85, 0.5]), dark)[np.maximum(iy, 0), np.maximum(ix, 0)]
    tex[inside] = win[inside]
    roof = ly < rng.integers(1, 4)
    tex[roof] = facade * 0.6
    img[y0:y1, x0:x1], label[y0:y1, x0:x1] = tex, BUILDING


def _paint_tree(c: _Ctx, img: np.ndarray, label: np.ndarray, leaves: np.ndarray, jag: np.ndarray, base_y: float):
    rng = c.rng
    t = np.clip((base_y - c.horizon.mean()) / max(c.h - c.horizon.mean(), 1.0), 0.0, 1.2)
    r = (0.07 + 0.13 * t) * c.h * rng.uniform(0.8, 1.2)
    land = np.flatnonzero(~np.isin(label[min(int(base_y), c.h - 1)], (WATER, ROAD)))
    if land.size == 0:  # trees do not grow in water or on the road
        return
    cx = rng.choice(land) + rng.uniform(-0.5, 0.5)
    trunk_h, trunk_w = r * rng.uniform(0.5, 1.1), max(2.0, 0.22 * r)
    cy = base_y - trunk_h - 0.8 * r
    # Work in the tree's bounding box only.
    x0, x1 = max(int(cx - 1.8 * r), 0), min(int(cx + 1.8 * r) + 2, c.w)
    y0, y1 = max(int(cy - 1.8 * r), 0), min(int(base_y) + 1, c.h)
    if x1 <= x0 or y1 <= y0:
        return
    box = (slice(y0, y1), slice(x0, x1))
    xx, yy, jag = c.xx[box], c.yy[box], jag[box]
    if rng.random() < 0.3:  # conifer: a tall tiered triangle
        top, bottom = cy - 1.6 * r, base_y - 0.5 * trunk_h
        frac = np.clip((yy - top) / (bottom - top), 0.0, 1.0)
        tier = 0.75 + 0.25 * (((yy - top) / max(0.35 * r, 1.0)) % 1.0)
        crown = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) < frac * tier * 0.75 * r * (1 + 0.12 * jag))
    else:  # broadleaf: a union of jittered ellipses with a ragged edge
        crown = np.zeros(xx.shape, bool)
        for _ in range(rng.integers(3, 7)):
            ex, ey = cx + rng.uniform(-0.6, 0.6) * r, cy + rng.uniform(-0.5, 0.4) * r
            ra, rb = r * rng.uniform(0.45, 0.8), r * rng.uniform(0.4, 0.7)
            crown |= ((xx - ex) / ra) ** 2 + ((yy - ey) / rb) ** 2 < 1 + 0.25 * jag
    trunk = (np.abs(xx - cx) < trunk_w / 2) & (yy > cy) & ~crown
    light = np.clip(1 - 0.25 * ((xx - cx) + (yy - cy)) / r, 0.7, 1.3)
    patch = img[box]  # a view: writing into it paints the scene
    patch[crown] = (_colour(rng, TREE) * (leaves[box] * light)[..., None])[crown]
    bark = np.float32([0.33, 0.23, 0.14]) * rng.uniform(0.7, 1.2) * (1 + 0.15 * jag)[..., None]
    patch[trunk] = bark[trunk]
    label[box][crown | trunk] = TREE


def generate_scene(rng: np.random.Generator, size: tuple[int, int] = (128, 128)) -> tuple[Image.Image, np.ndarray]:
    """One random outdoor scene: an RGB image and its (H, W) uint8 label map with ids into ``CLASS_NAMES``.

    ``size`` is (height, width). Every random choice is drawn from ``rng``, so a seeded generator gives the
    same scene every time.
    """
    h, w = size
    hy = h * rng.uniform(0.2, 0.55)
    # Ground bands from the horizon towards the viewer; neighbouring bands differ.
    bands: list[int] = []
    for _ in range(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])):
        options = [k for k in (WATER, SAND, GRASS) if not bands or k != bands[-1]]
        weights = np.array([{WATER: 0.85, SAND: 0.7, GRASS: 1.2}[k] for k in options])
        bands.append(int(rng.choice(options, p=weights / weights.sum())))
    x = np.arange(w, dtype=np.float32)
    horizon = hy + rng.uniform(-0.08, 0.08) * (x - w / 2)
    if bands[0] != WATER:  # gentle hills; a sea horizon stays flat
        horizon = horizon + rng.uniform(0.0, 0.04 * h) * _noise(rng, 1, w, 1.0, w / 3)[0]
    c = _Ctx(rng, h, w, horizon)
    makers: dict[int, Callable] = {SKY: _sky, WATER: _water, GRASS: _grass, SAND: _sand, ROAD: _road}
    textures: dict[int, np.ndarray] = {}
    img = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)

    def paint(mask: np.ndarray, cls: int) -> None:
        if cls not in textures:
            textures[cls] = makers[cls](c)
        np.copyto(img, textures[cls], where=mask[..., None])
        label[mask] = cls

    ground = c.yy >= horizon
    paint(~ground, SKY)
    cuts = np.sort(rng.uniform(0.1, 0.8, len(bands) - 1))
    wobble = _noise(rng, 1, w, 1.0, w / rng.uniform(2, 6))[0] * rng.uniform(0.0, 0.06)
    band_index = (c.depth[..., None] > (cuts + wobble[:, None])[None]).sum(-1)
    for i, cls in enumerate(bands):
        paint(ground & (band_index == i), cls)
    # A road starts at the bottom edge, so it may only meet water as the far band (it ends at the shore).
    has_road = WATER not in bands[1:] and bands[-1] != WATER and rng.random() < 0.75
    for _ in range(min(rng.poisson(0.8), 2)):  # irregular patches: ponds, sand pits, lawns
        t = rng.uniform(0.3, 0.9)
        cy, cx = hy + t * (h - hy), rng.uniform(0, w)
        rx = w * rng.uniform(0.1, 0.3) * (0.5 + t)
        ry = rx * rng.uniform(0.25, 0.5)
        box = (slice(max(int(cy - 1.5 * ry), 0), int(cy + 1.5 * ry) + 1),
               slice(max(int(cx - 1.5 * rx), 0), int(cx + 1.5 * rx) + 1))
        dx, dy = (c.xx[box] - cx) / rx, (c.yy[box] - cy) / ry
        theta = np.arctan2(dy, dx)
        edge = 1 + sum(rng.uniform(0, 0.15) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        mask = np.zeros((h, w), bool)
        mask[box] = dx**2 + dy**2 < edge**2
        paint(ground & mask, int(rng.choice([SAND, GRASS] if has_road else [WATER, SAND, GRASS])))
    if has_road:  # running towards a vanishing point on the horizon
        d = c.depth
        vx, bx, bend = rng.uniform(0.2, 0.8) * w, rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.3, 0.3) * w
        centre = vx + (bx - vx) * d + bend * d * (1 - d)
        half = w * (rng.uniform(0.01, 0.03) + rng.uniform(0.18, 0.35) * d)
        off = np.abs(c.xx - centre)
        paint(ground & (off < half) & (d > 0.005) & (label != WATER), ROAD)
        marks = (off < 0.05 * half + 0.3) & (np.sin(2 * np.pi * rng.uniform(0.4, 0.9) / (d + 0.08)) > 0.1)
        if rng.random() < 0.5:
            marks |= (off > 0.86 * half) & (off < 0.92 * half)
        marks &= label == ROAD
        img[marks] = np.float32([0.95, 0.93, 0.85] if rng.random() < 0.7 else [0.95, 0.8, 0.25]) * 0.9
    haze = rng.uniform(0.0, 0.4) * (1 - c.depth[..., None]) ** 3 * ground[..., None]  # aerial perspective
    img[:] = img * (1 - haze) + textures[SKY][np.clip(horizon.astype(int) - 1, 0, h - 1), np.arange(w)] * haze
    if rng.random() < 0.55:  # buildings standing on the horizon
        for _ in range(rng.integers(1, 5)):
            bw = w * rng.uniform(0.08, 0.3)
            x0 = int(np.clip(rng.uniform(-0.1, 1.0) * w - bw / 2, 0, w - 2))
            x1 = int(np.clip(x0 + bw, x0 + 2, w))
            y1 = int(min(horizon[x0:x1].max() + rng.uniform(1, 4), h))
            y0 = int(np.clip(y1 - hy * rng.uniform(0.35, 1.2), 0, y1 - 2))
            _paint_building(c, img, label, x0, x1, y0, y1)
    n_trees = rng.choice([0, 1, 2, 3, 4, 5], p=[0.25, 0.15, 0.2, 0.15, 0.15, 0.1])
    if n_trees:
        leaves = 0.8 + 0.3 * np.tanh(1.5 * _noise(rng, h, w, 2.5 * c.s))
        jag = _noise(rng, h, w, 3.0 * c.s)  # ragged crown edges
        for base_y in np.sort(hy + rng.uniform(0.05, 1.15, n_trees) * (h - hy)):  # far trees first
            _paint_tree(c, img, label, leaves, jag, float(base_y))
    # Global photometric changes: exposure, colour cast, a side-to-side light gradient, blur, sensor noise.
    img *= rng.uniform(0.7, 1.2) * (1 + rng.normal(0.0, 0.04, 3)).astype(np.float32)
    img *= (1 + rng.uniform(-0.2, 0.2) * (c.xx / w - 0.5))[..., None]
    image = Image.fromarray((np.clip(img, 0.0, 1.0) * 255).astype(np.uint8))
    arr = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8))), np.float32)
    arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * rng.uniform(2.0, 8.0)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)), label


def _safe_io():
    """`fgaseg_hf.safe_io`; loaded from its file when this module runs alone (scripts/make_synthetic_scenes.py
    skips the package import, which pulls in torch)."""
    if __package__:
        from .. import safe_io

        return safe_io
    import importlib.util
    import sys

    module = sys.modules.get("_fgaseg_safe_io")
    if module is None:
        spec = importlib.util.spec_from_file_location("_fgaseg_safe_io", Path(__file__).resolve().parents[1] / "safe_io.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["_fgaseg_safe_io"] = module
        spec.loader.exec_module(module)
    return module


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of scene ``index`` of ``split`` ("train" or "validation") for generator ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def write_synthetic_dataset(
    output_dir: PathLike, num_train: int = 3000, num_validation: int = 300, size: tuple[int, int] = (128, 128),
    seed: int = 0, progress: bool = True, overwrite: bool = False,
) -> Path:
    """Write ``train/`` and ``validation/`` image folders (images, label-map PNGs, ``metadata.jsonl``), plus
    ``class_names.json`` and a ``README.md`` card, to ``output_dir``; returns its path.

    Same arguments give byte-identical files. A folder that is not empty is refused (`OutputFolderError`) unless
    ``overwrite``; then the files an earlier run wrote there (its manifest) are removed first, and every other
    file is kept.
    """
    from tqdm.auto import tqdm

    root = Path(output_dir)
    folder = _safe_io().OutputFolder(root, overwrite).prepare()
    names = [f"{i:05d}.png" for i in range(max(num_train, num_validation))]
    folder.claim(
        [f"{split}/{sub}/{name}" for split, count in (("train", num_train), ("validation", num_validation))
         for sub in ("images", "annotations") for name in names[:count]]
        + [f"{split}/metadata.jsonl" for split in SPLITS] + ["class_names.json", "README.md"]
    )
    for split, count in (("train", num_train), ("validation", num_validation)):
        split_dir = root / split
        for sub in ("images", "annotations"):
            (split_dir / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in tqdm(range(count), desc=f"synthetic {split}", disable=not progress):
            image, label = generate_scene(scene_rng(seed, split, i), size)
            name = f"{i:05d}.png"
            image.save(split_dir / "images" / name, format="PNG")
            Image.fromarray(label).save(split_dir / "annotations" / name, format="PNG")
            lines.append(json.dumps({"file_name": f"images/{name}", "annotation_file_name": f"annotations/{name}"}))
        (split_dir / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    (root / "class_names.json").write_text(json.dumps(CLASS_NAMES) + "\n")
    classes = "\n".join(f"| {i} | {name} |" for i, name in enumerate(CLASS_NAMES))
    (root / "README.md").write_text(
        f"# Synthetic scenes\n\nProcedurally generated outdoor scenes for semantic segmentation, written by "
        f"`fgaseg_hf.data.synthetic` (generator seed {seed}, {size[0]}x{size[1]} px, height x width).\n\n"
        f"- train: {num_train} scenes, validation: {num_validation} scenes (independent random streams)\n"
        f"- `images/NNNNN.png`: RGB image; `annotations/NNNNN.png`: label map (mode L, one class id per pixel)\n"
        f"- load with `fgaseg_hf.data.synthetic.load_synthetic_dataset(path)` or "
        f"`datasets.load_dataset(\"imagefolder\", data_dir=path)`\n\n| id | class |\n|---|---|\n{classes}\n"
    )
    return root


def load_synthetic_dataset(path: PathLike, cache_dir: PathLike | None = None) -> tuple[datasets.DatasetDict, list[str]]:
    """The ``train`` and ``validation`` splits of a written folder (``image`` and ``annotation`` Image()
    columns) and the class names. Works offline: the ``imagefolder`` builder ships with ``datasets``, and its
    metadata key ``annotation_file_name`` becomes the ``annotation`` image column. ``cache_dir`` defaults to
    the Hugging Face datasets cache."""
    import datasets

    from .folders import load_split_folder

    root = Path(path)
    splits = {split: load_split_folder(root / split, cache_dir) for split in SPLITS}
    return datasets.DatasetDict(splits), json.loads((root / "class_names.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """Command line: write a synthetic-scenes dataset folder."""
    parser = argparse.ArgumentParser(prog="fgaseg synthetic", description="Write a procedural outdoor-scenes segmentation dataset.")
    # The defaults are the demo model's recipe: configs/train/synthetic_demo.yaml reads this folder (data.path).
    parser.add_argument("--output", default="outputs/synthetic_scenes",
                        help="folder to write (train/, validation/, class_names.json; default: %(default)s)")
    parser.add_argument("--train", type=int, default=4000, help="number of training scenes (default: %(default)s)")
    parser.add_argument("--validation", type=int, default=300, help="number of validation scenes")
    parser.add_argument("--size", type=int, nargs="+", default=[128], help="SIZE or HEIGHT WIDTH in pixels")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder, replacing what an earlier run wrote (other files are kept)")
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes one or two integers")
    if min(args.size) < 1 or min(args.train, args.validation) < 0:
        parser.error("--size must be positive and --train / --validation non-negative")
    size = (args.size[0], args.size[-1])
    try:
        root = write_synthetic_dataset(args.output, args.train, args.validation, size, args.seed, not args.no_progress,
                                       overwrite=args.overwrite)
    except (_safe_io().OutputFolderError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.train} train and {args.validation} validation scenes to {root}")
    return 0
