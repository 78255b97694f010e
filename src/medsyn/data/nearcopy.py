"""Near-copies: is one image a resized, re-encoded, gray/RGB, shifted, mirrored, zoom-cropped, rotated, gamma- or
contrast-changed or blurred copy of another? The one detector of the leak guard (copies across the splits a source
gives) and of the memorization audit (synthetic images that copy a training image).

Each image becomes a THUMB x THUMB gray thumbnail of the image as the source gives it, resized WITHOUT keeping its
aspect (stretch), so resizing, re-encoding and cropping to a square later do not matter. A thumbnail is rank-equalised
(a monotone change such as gamma or contrast leaves the ranks unchanged) and lightly blurred. Two thumbnails are
compared by the normalised (Pearson) correlation of their centres at half resolution, after the query is mapped back
by a flip and an affine warp (zoom, rotation, shift) chosen to match best: first on a coarse grid against every
reference (matrix products, one per grid point), then refined by a local pattern search on the best `candidates`
references of each query. A copy scores about 0.999 and more; different chest X-rays of the same view reach about
0.994 (see `SAME_IMAGE_CORRELATION`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DETECTOR_VERSION = 2  # bump when the detector or its threshold changes: cached results (leaks, audit yardstick) are
                      # then recomputed
THUMB = 32            # thumbnail side (pixels), stretched from the source image
BLUR_SIGMA = 1.0      # Gaussian blur of the equalised thumbnail, in thumbnail pixels
VIEW_CROP = 2         # border (at half resolution, 16 px) left out of the comparison: what a warp fills in
# The coarse grid applied to the query: left-right flip x zoom-out (undoes a zoom-crop of up to 10%) x rotation x
# shift (normalised units: 2 = the image width).
COARSE_SCALES = (1.0, 1.09)
COARSE_ANGLES = (-3.0, 0.0, 3.0)
COARSE_SHIFTS = (-0.14, -0.07, 0.0, 0.07, 0.14)  # up to 7% of the width: 2 px at 28 px, where a local
                                                 # search from 0 stalled on 1 in 5 planted 2-px shifts
REFINE_STEPS = (0.02, 1.5, 0.03, 0.03)  # first pattern-search steps: log-zoom, degrees, shift x, shift y
REFINE_LEVELS = 4                       # each level halves the steps
REFINE_ROUNDS = 2                       # moves taken per level
CANDIDATES = 4                          # references refined per query

# "Same image" for the leak guard: above what pairs that are certainly different reach (the official Kaggle
# chest_xray splits and PneumoniaMNIST's test vs train split), with a margin, and below what planted copies of every
# kind score. Measured by benchmarks/nearcopy_calibration.py (benchmarks/results/nearcopy_calibration.json);
# tests/test_data_leaks.py checks the official splits raise no alarm.
SAME_IMAGE_CORRELATION = 0.996


@dataclass
class Matches:
    """Per query row: its best-matching references, best first."""

    correlation: np.ndarray   # (n_queries, k) best correlation over flips and warps
    index: np.ndarray         # (n_queries, k) reference row
    transform: list           # per query, the warp of its best match in words

    @property
    def best(self) -> np.ndarray:
        return self.correlation[:, 0]

    @property
    def best_index(self) -> np.ndarray:
        return self.index[:, 0]


def thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) as the source gives it -> uint8 (THUMB, THUMB) gray, aspect NOT kept."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    picture = Image.fromarray(np.ascontiguousarray(array))
    if picture.mode != "L":
        picture = picture.convert("L")
    return np.asarray(picture.resize((THUMB, THUMB), Image.Resampling.BILINEAR))


def thumbnails(images) -> np.ndarray:
    """A thumbnail per image: (N, THUMB, THUMB) uint8."""
    return np.stack([thumbnail(image) for image in images]) if len(images) else np.zeros((0, THUMB, THUMB), np.uint8)


def prepared(thumbs: np.ndarray):
    """Thumbnails -> rank-equalised, blurred float maps (N, 1, THUMB, THUMB) as a torch tensor."""
    import torch
    from scipy.ndimage import gaussian_filter
    from scipy.stats import rankdata

    flat = np.asarray(thumbs, dtype=np.float64).reshape(len(thumbs), -1)
    ranks = rankdata(flat, axis=1) / flat.shape[1] if len(flat) else flat
    maps = gaussian_filter(ranks.reshape(-1, THUMB, THUMB), sigma=(0, BLUR_SIGMA, BLUR_SIGMA), mode="nearest")
    return torch.from_numpy(maps.astype(np.float32))[:, None]


def _view(maps):
    """Maps -> the standardised centre at half resolution (N, D): a dot product is a Pearson correlation."""
    import torch.nn.functional as F

    x = F.avg_pool2d(maps, 2)
    size = x.shape[-1]
    x = x[..., VIEW_CROP:size - VIEW_CROP, VIEW_CROP:size - VIEW_CROP].flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _flipped(maps, flip):
    """Each map mirrored left-right where `flip` (N,) says so."""
    import torch

    return torch.where(flip[:, None, None, None], maps.flip(-1), maps)


def _warp(maps, params):
    """Map each query back: sample at zoom * rotation * x + shift. params: (N, 4), or (1, 4) for one warp of every
    map (its sampling grid is made once), log-zoom, degrees, shift x, shift y (zoom > 1 shrinks the content: undoes
    a zoom-crop)."""
    import torch
    import torch.nn.functional as F

    zoom, angle = params[:, 0].exp(), params[:, 1] * (math.pi / 180)
    cos, sin = zoom * angle.cos(), zoom * angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, params[:, 2]], 1), torch.stack([sin, cos, params[:, 3]], 1)], 1)
    grid = F.affine_grid(theta, (len(params), *maps.shape[1:]), align_corners=False).expand(len(maps), -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _coarse_grid():
    import torch

    rows = [(flip, math.log(s), a, dx, dy) for flip in (False, True) for s in COARSE_SCALES for a in COARSE_ANGLES
            for dy in COARSE_SHIFTS for dx in COARSE_SHIFTS]
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1:] for r in rows], dtype=torch.float32)


def best_matches(query_thumbs: np.ndarray, reference_thumbs: np.ndarray, candidates: int | None = None,
                 exclude_self: bool = False, batch_size: int = 1024) -> Matches:
    """For each query thumbnail, its `candidates` best references, by the correlation after the best flip and warp
    of the query. `exclude_self`: queries and references are the same set; a row is never its own match."""
    import torch

    queries, references = prepared(query_thumbs), prepared(reference_thumbs)
    k = max(1, min(candidates or CANDIDATES, len(references) - int(exclude_self)))
    flips, grid = _coarse_grid()
    ref_view = _view(references)
    top_value, top_index, top_grid = [], [], []
    for start in range(0, len(queries), batch_size):
        block = queries[start:start + batch_size]
        n = len(block)
        mirrored = {False: block, True: block.flip(-1)}
        best = torch.full((n, len(references)), -2.0)
        which = torch.zeros((n, len(references)), dtype=torch.int16)
        for g in range(len(grid)):
            scores = _view(_warp(mirrored[bool(flips[g])], grid[g][None])) @ ref_view.T
            which.masked_fill_(scores > best, g)
            torch.maximum(scores, best, out=best)
        if exclude_self:
            rows = torch.arange(n)
            best[rows, rows + start] = -3.0
        value, index = best.topk(k, dim=1)
        top_value.append(value)
        top_index.append(index)
        top_grid.append(which.gather(1, index).long())
    if not top_value:
        return Matches(np.zeros((0, k)), np.zeros((0, k), dtype=np.int64), [])
    index = torch.cat(top_index)
    start_grid = torch.cat(top_grid)
    query_rows = torch.arange(len(queries))[:, None].expand_as(index).reshape(-1)
    value, params = _refine(queries[query_rows], ref_view[index.reshape(-1)], flips[start_grid.reshape(-1)],
                            grid[start_grid.reshape(-1)].clone())
    value = torch.maximum(value.view_as(index), torch.cat(top_value))  # never below the coarse score
    order = value.argsort(dim=1, descending=True)
    value, index = value.gather(1, order), index.gather(1, order)
    if exclude_self:
        value = torch.where(index == torch.arange(len(queries))[:, None], torch.full_like(value, -1.0), value)
    flips_best = flips[start_grid.gather(1, order)[:, 0]]
    params_best = params.view(*index.shape, 4)[torch.arange(len(index)), order[:, 0]]
    names = [_describe(bool(f), p) for f, p in zip(flips_best.tolist(), params_best.tolist())]
    return Matches(value.double().numpy(), index.numpy(), names)


def _refine(queries, ref_rows, flips, params, batch_size: int = 4096):
    """Pattern search per (query, reference) pair from its coarse grid point: each axis stepped both ways, the best
    improvement taken, steps halved every level. Returns the correlations and the parameters."""
    import torch

    values, found = [], []
    steps0 = torch.tensor(REFINE_STEPS)
    for start in range(0, len(queries), batch_size):
        q = _flipped(queries[start:start + batch_size], flips[start:start + batch_size])
        r, p = ref_rows[start:start + batch_size], params[start:start + batch_size]

        def score(candidate):
            return (_view(_warp(q, candidate)) * r).sum(1)

        best = score(p)
        for level in range(REFINE_LEVELS):
            steps = steps0 / 2 ** level
            for _ in range(REFINE_ROUNDS):
                moves = [(axis, sign) for axis in range(4) for sign in (-1.0, 1.0)]
                trial_best, trial_params = best.clone(), p.clone()
                for axis, sign in moves:
                    trial = p.clone()
                    trial[:, axis] += sign * steps[axis]
                    value = score(trial)
                    better = value > trial_best
                    trial_best = torch.where(better, value, trial_best)
                    trial_params = torch.where(better[:, None], trial, trial_params)
                best, p = trial_best, trial_params
        values.append(best)
        found.append(p)
    return torch.cat(values), torch.cat(found)


def _describe(flip: bool, params) -> str:
    log_zoom, angle, dx, dy = params
    # dx, dy in normalised units (2 = width): as a share of the width
    return (f"{'flip, ' if flip else ''}zoom {math.exp(log_zoom):.3f}, rotate {angle:+.1f} deg, "
            f"shift ({dx / 2:+.3f}, {dy / 2:+.3f}) of the width")
