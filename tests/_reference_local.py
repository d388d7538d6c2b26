"""Loop-based oracles for the local contrastive loss, written from the equations.

DESIGN.md §4 (the paper's L^R / L^D, both directions) and REFERENCE.md §2.2–2.5 (what the
original code computes). One term at a time, explicit ``exp``/``log`` (float64, τ ≥ 0.05 in the
tests, so nothing overflows). The functions work on NumPy arrays and on torch tensors (through
``_Ops``), so the same loops give values and, with torch autograd, gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The position tables of REFERENCE.md §2.3, as printed there (parsed below).
REFERENCE_TABLE_13_K3 = """
0 | (0,0) | (0,h) (q,q) (q,h) (h,0) (h,q)
1 | (0,h) | (0,0) (0,e) (q,q) (q,t) (h,h)
2 | (0,e) | (0,h) (q,h) (q,t) (h,t) (h,e)
3 | (h,0) | (0,0) (q,q) (h,h) (e,0) (t,q)
4 | (h,h) | (q,q) (q,t) (t,q) (t,t) (h,0)
5 | (h,e) | (0,e) (h,h) (e,e) (q,t) (t,t)
6 | (e,0) | (h,0) (h,q) (e,h) (t,q) (t,h)
7 | (e,h) | (h,h) (e,0) (e,e) (t,q) (t,t)
8 | (e,e) | (h,t) (h,e) (e,h) (t,t) (t,h)
9 | (q,q) | (0,0) (0,h) (h,0) (h,h) (q,t)
10 | (q,t) | (0,h) (0,e) (q,q) (h,h) (h,e)
11 | (t,q) | (h,0) (h,h) (e,0) (e,h) (t,t)
12 | (t,t) | (h,h) (h,e) (e,h) (e,e) (t,q)
"""

REFERENCE_TABLE_13_K1 = """
0 | (0,0) | (0,h) (h,0) (h,h) (q,q) (q,t)
1 | (0,h) | (0,0) (0,e) (h,h) (q,q) (q,t)
2 | (0,e) | (0,h) (h,h) (h,e) (t,q) (q,t)
3 | (h,0) | (0,0) (h,h) (e,0) (q,q) (t,q)
4 | (h,h) | (q,q) (q,t) (t,q) (t,t) (h,0)
5 | (h,e) | (0,e) (h,h) (e,e) (q,t) (t,t)
6 | (e,0) | (h,0) (h,h) (e,h) (t,q) (q,q)
7 | (e,h) | (h,h) (e,0) (e,e) (t,q) (t,t)
8 | (e,e) | (h,h) (h,e) (e,h) (t,t) (t,q)
9 | (q,q) | (0,0) (0,h) (h,0) (h,h) (q,t)
10 | (q,t) | (0,h) (0,e) (h,h) (h,e) (t,t)
11 | (t,q) | (h,0) (h,h) (e,0) (0,h) (q,q)
12 | (t,t) | (h,h) (h,e) (e,h) (e,e) (q,t)
"""

REFERENCE_TABLE_9 = """
0 | (0,0) | (0,h)(h,0)(h,h)(0,e)(e,0)
1 | (0,h) | (0,0)(0,e)(h,0)(h,h)(h,e)
2 | (0,e) | (0,0)(0,h)(h,h)(h,e)(e,e)
3 | (h,0) | (0,0)(0,h)(h,h)(e,0)(e,h)
4 | (h,h) | (0,0)(0,h)(h,0)(h,e)(e,h)
5 | (h,e) | (0,h)(0,e)(h,h)(e,h)(e,e)
6 | (e,0) | (0,0)(h,0)(h,h)(e,h)(e,e)
7 | (e,h) | (h,0)(h,h)(h,e)(e,0)(e,e)
8 | (e,e) | (0,e)(h,h)(h,e)(e,0)(e,h)
"""


def reference_tables(map_size: int, region_size: int, num_regions: int) -> tuple[Any, Any]:
    """Positions (R, 2) and negatives (R, 5, 2) parsed from REFERENCE.md §2.3's text."""
    e = map_size - 4 if region_size == 3 else map_size - 1
    value = {"0": 0, "h": e // 2, "q": e // 4, "t": (3 * e) // 4, "e": e}
    if num_regions == 9:
        text = REFERENCE_TABLE_9
    else:
        text = REFERENCE_TABLE_13_K3 if region_size == 3 else REFERENCE_TABLE_13_K1
    positions, negatives = [], []
    for line in text.strip().splitlines():
        _, pos, negs = (part.strip() for part in line.split("|"))
        px, py = pos.strip("()").split(",")
        positions.append([value[px], value[py]])
        pairs = negs.replace(" ", "").replace(")(", ") (").split(" ")
        row = []
        for pair in pairs:
            nx, ny = pair.strip("()").split(",")
            row.append([value[nx], value[ny]])
        negatives.append(row)
    return np.array(positions), np.array(negatives)


class _Ops:
    """The handful of operations the loops need, for NumPy or torch."""

    def __init__(self, x: Any) -> None:
        self.torch = type(x).__module__.startswith("torch")
        if self.torch:
            import torch

            self.lib = torch
        else:
            self.lib = np

    def concat(self, parts: list[Any]) -> Any:
        return self.lib.cat(parts) if self.torch else np.concatenate(parts)

    def exp(self, x: Any) -> Any:
        return self.lib.exp(x)

    def log(self, x: Any) -> Any:
        return self.lib.log(x)

    def sqrt(self, x: Any) -> Any:
        return self.lib.sqrt(x)

    def stack(self, parts: list[Any]) -> Any:
        return self.lib.stack(parts)


def region_vector(
    features: Any, row: int, x: int, y: int, region_size: int, projection: Any = None
) -> Any:
    """Region of `row` at top-left (x, y): (row offset, column offset, channel) order."""
    ops = _Ops(features)
    parts = [
        features[row, :, x + dx, y + dy] for dx in range(region_size) for dy in range(region_size)
    ]
    vec = ops.concat(parts)
    if projection is not None:
        vec = vec @ projection
    return vec


class _Regions:
    """Region vectors u(row, point) and their norms, each computed once (loops stay readable)."""

    def __init__(self, features: Any, region_size: int, projection: Any) -> None:
        self.features, self.region_size, self.projection = features, region_size, projection
        self.ops = _Ops(features)
        self.cache: dict[tuple[int, int, int], tuple[Any, Any]] = {}

    def get(self, row: int, point: Any) -> tuple[Any, Any]:
        key = (row, int(point[0]), int(point[1]))
        if key not in self.cache:
            vec = region_vector(
                self.features, row, key[1], key[2], self.region_size, self.projection
            )
            self.cache[key] = (vec, self.ops.sqrt(vec @ vec))
        return self.cache[key]

    def s(self, row_1: int, point_1: Any, row_2: int, point_2: Any, temperature: float) -> Any:
        """Cosine similarity of two regions divided by the temperature."""
        u, nu = self.get(row_1, point_1)
        v, nv = self.get(row_2, point_2)
        return (u @ v) / (nu * nv) / temperature


def local_term_reference(
    regions: _Regions,
    a: int,
    p: int,
    r: int,
    positions: np.ndarray,
    negatives: np.ndarray,
    temperature: float,
) -> Any:
    """ℓ(a, p, r) of DESIGN.md §4, written out."""
    ops = regions.ops
    num = ops.exp(regions.s(a, positions[r], p, positions[r], temperature))
    den = num
    for point in negatives[r]:
        den = den + ops.exp(regions.s(a, positions[r], a, point, temperature))
    for point in negatives[r]:
        den = den + ops.exp(regions.s(a, positions[r], p, point, temperature))
    return -ops.log(num / den)


def strategy_weights_reference(
    image_ids: Any, partition_ids: Any, volume_ids: Any, strategy: str
) -> np.ndarray:
    """W (N, N) of the paper's strategies, row pair by row pair."""
    n = len(image_ids)
    w = np.zeros((n, n))
    for a in range(n):
        for p in range(n):
            if a == p:
                continue
            positive = image_ids[a] == image_ids[p]
            if strategy == "domain":
                positive = positive or (
                    partition_ids[a] == partition_ids[p] and volume_ids[a] != volume_ids[p]
                )
            w[a, p] = float(positive)
    return w


def local_loss_reference(
    features: Any,
    weights: np.ndarray,
    positions: np.ndarray,
    negatives: np.ndarray,
    *,
    region_size: int,
    projection: Any = None,
    temperature: float = 0.1,
    normalizer: float | None = None,
    reduction: str = "mean",
) -> Any:
    """Σ_{a,p,r} W_ap ℓ(a, p, r) / normaliser (default R·ΣW), or the dense (N, N, R) terms."""
    regions = _Regions(features, region_size, projection)
    n = weights.shape[0]
    num_regions = len(positions)
    total = None
    dense: dict[tuple[int, int, int], Any] = {}
    for a in range(n):
        for p in range(n):
            if weights[a, p] == 0:
                continue
            for r in range(num_regions):
                term = weights[a, p] * local_term_reference(
                    regions, a, p, r, positions, negatives, temperature
                )
                dense[(a, p, r)] = term
                total = term if total is None else total + term
    if reduction == "none":
        out = np.zeros((n, n, num_regions))
        for key, value in dense.items():
            out[key] = float(value)
        return out
    if reduction == "sum":
        return total
    norm = normalizer if normalizer is not None else num_regions * float(weights.sum())
    return total / norm


def original_lr_reference(
    features: Any,
    positions: np.ndarray,
    negatives: np.ndarray,
    *,
    batch_size: int,
    region_size: int,
    projection: Any = None,
    temperature: float = 0.1,
) -> Any:
    """REFERENCE.md §2.4 (L^R, interleaved views, J = 5), transcribed loop by loop."""
    regions = _Regions(features, region_size, projection)
    ops = regions.ops
    num_regions = len(positions)
    total = None

    def e(row_1: int, point_1: Any, row_2: int, point_2: Any) -> Any:
        return ops.exp(regions.s(row_1, point_1, row_2, point_2, temperature))

    for i in range(batch_size):
        a, b = 2 * i, 2 * i + 1
        for r in range(num_regions):
            p_r = positions[r]
            d_a = 0.0
            d_b = 0.0
            for j in range(5):
                n_rj = negatives[r][j]
                d_a = d_a + e(a, p_r, a, n_rj) + e(a, p_r, b, n_rj)
                d_b = d_b + e(b, p_r, b, n_rj) + e(b, p_r, a, n_rj)
            pos = e(a, p_r, b, p_r)
            terms = -ops.log(pos / (pos + d_a)) - ops.log(pos / (pos + d_b))
            total = terms if total is None else total + terms
    return total / (num_regions * 2 * batch_size)


def original_ld_reference(
    features: Any,
    positions: np.ndarray,
    negatives: np.ndarray,
    *,
    region_size: int,
    projection: Any = None,
    temperature: float = 0.1,
    num_negatives: int = 4,
) -> Any:
    """REFERENCE.md §2.5 (L^D, 12 slices, concatenated views), transcribed loop by loop."""
    regions = _Regions(features, region_size, projection)
    ops = regions.ops
    num_regions = len(positions)
    total = None

    def e(row_1: int, point_1: Any, row_2: int, point_2: Any) -> Any:
        return ops.exp(regions.s(row_1, point_1, row_2, point_2, temperature))

    for k in range(12):
        i1, i2, i3, i4 = k, 12 + k, (k + 4) % 12, (k + 8) % 12
        for r in range(num_regions):
            p_r = positions[r]
            base = 0.0
            for j in range(num_negatives):
                base = base + e(i1, p_r, i1, negatives[r][j])
            for im in (i2, i3, i4):
                d_m = base
                for j in range(num_negatives):
                    d_m = d_m + e(i1, p_r, im, negatives[r][j])
                pos = e(i1, p_r, im, p_r)
                term = -ops.log(pos / (pos + d_m))
                total = term if total is None else total + term
    return total / (num_regions * 24)
