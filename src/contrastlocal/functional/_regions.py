"""Local regions of feature maps: the paper's position patterns and region extraction.

A *region* of size K (1 or 3) at grid position ``(x, y)`` (``x`` along the height axis, ``y``
along the width axis) is the K×K block of a feature map whose top-left corner is ``(x, y)``,
flattened in (row offset, column offset, channel) order to a vector of length K·K·C.

The default patterns (13 or 9 positions, each with 5 hand-picked nearby negative positions) are
the fixed grids of Chaitanya et al. (NeurIPS 2020), computed from the map size and K.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array_api import array_namespace, device
from .._typing import Array, Namespace
from .._validation import (
    as_positions,
    check_choice,
    check_floating,
    check_ndim,
    check_region_size,
    points_key,
    shape_of,
)

__all__ = ["extract_regions", "local_region_positions"]

# Symbolic tables. Each coordinate is one of the symbols of the grid along its axis:
# "0" (first), "q" (quarter), "h" (half), "t" (three quarters), "e" (last start).
_POSITIONS_13: tuple[str, ...] = (
    "00",
    "0h",
    "0e",
    "h0",
    "hh",
    "he",
    "e0",
    "eh",
    "ee",
    "qq",
    "qt",
    "tq",
    "tt",
)

_NEGATIVES_13_K3: tuple[tuple[str, ...], ...] = (
    ("0h", "qq", "qh", "h0", "hq"),
    ("00", "0e", "qq", "qt", "hh"),
    ("0h", "qh", "qt", "ht", "he"),
    ("00", "qq", "hh", "e0", "tq"),
    ("qq", "qt", "tq", "tt", "h0"),
    ("0e", "hh", "ee", "qt", "tt"),
    ("h0", "hq", "eh", "tq", "th"),
    ("hh", "e0", "ee", "tq", "tt"),
    ("ht", "he", "eh", "tt", "th"),
    ("00", "0h", "h0", "hh", "qt"),
    ("0h", "0e", "qq", "hh", "he"),
    ("h0", "hh", "e0", "eh", "tt"),
    ("hh", "he", "eh", "ee", "tq"),
)

_NEGATIVES_13_K1: tuple[tuple[str, ...], ...] = (
    ("0h", "h0", "hh", "qq", "qt"),
    ("00", "0e", "hh", "qq", "qt"),
    ("0h", "hh", "he", "tq", "qt"),
    ("00", "hh", "e0", "qq", "tq"),
    ("qq", "qt", "tq", "tt", "h0"),
    ("0e", "hh", "ee", "qt", "tt"),
    ("h0", "hh", "eh", "tq", "qq"),
    ("hh", "e0", "ee", "tq", "tt"),
    ("hh", "he", "eh", "tt", "tq"),
    ("00", "0h", "h0", "hh", "qt"),
    ("0h", "0e", "hh", "he", "tt"),
    ("h0", "hh", "e0", "0h", "qq"),
    ("hh", "he", "eh", "ee", "qt"),
)

_NEGATIVES_9: tuple[tuple[str, ...], ...] = (
    ("0h", "h0", "hh", "0e", "e0"),
    ("00", "0e", "h0", "hh", "he"),
    ("00", "0h", "hh", "he", "ee"),
    ("00", "0h", "hh", "e0", "eh"),
    ("00", "0h", "h0", "he", "eh"),
    ("0h", "0e", "hh", "eh", "ee"),
    ("00", "h0", "hh", "eh", "ee"),
    ("h0", "hh", "he", "e0", "ee"),
    ("0e", "hh", "he", "e0", "eh"),
)

# Smallest last start ``e`` for which the grid's points are distinct (0 < q < h < t < e for 13
# regions; 0 < h < e for 9).
_MIN_LAST_START = {13: 4, 9: 2}


def _grid(e: int) -> dict[str, int]:
    return {"0": 0, "q": e // 4, "h": e // 2, "t": (3 * e) // 4, "e": e}


def _map_size_pair(map_size: Any) -> tuple[int, int]:
    if isinstance(map_size, (int, np.integer)) and not isinstance(map_size, bool):
        return int(map_size), int(map_size)
    if (
        isinstance(map_size, Sequence)
        and len(map_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in map_size)
    ):
        return int(map_size[0]), int(map_size[1])
    msg = f"`map_size` must be an int or a pair of ints (H, W); got {map_size!r}."
    raise TypeError(msg)


Point = tuple[int, int]
PointsKey = tuple[Point, ...]
NegativesKey = tuple[PointsKey, ...]


def _default_keys(
    height: int, width: int, region_size: int, num_regions: int
) -> tuple[PointsKey, NegativesKey]:
    """Return the default positions and negative tables as tuples of ints (no arrays).

    Pure Python, so that ``torch.compile`` evaluates it as a constant of the map size.
    """
    # The last start: 3x3 regions stop one row/column short of the border, as the original does.
    margin = 4 if region_size == 3 else 1
    need = _MIN_LAST_START[num_regions] + margin
    for name, m in (("height", height), ("width", width)):
        if m < need:
            msg = (
                f"`map_size` is too small: the {num_regions}-region pattern with "
                f"region_size={region_size} needs maps of at least {need}x{need}; "
                f"got {name} {m}."
            )
            raise ValueError(msg)
    gx, gy = _grid(height - margin), _grid(width - margin)
    if num_regions == 13:
        symbols = _POSITIONS_13
        negatives = _NEGATIVES_13_K3 if region_size == 3 else _NEGATIVES_13_K1
    else:
        symbols = _POSITIONS_13[:9]
        negatives = _NEGATIVES_9
    positions = tuple((gx[s[0]], gy[s[1]]) for s in symbols)
    negative_positions = tuple(tuple((gx[s[0]], gy[s[1]]) for s in row) for row in negatives)
    return positions, negative_positions


@functools.lru_cache(maxsize=64)
def _default_tables(
    height: int, width: int, region_size: int, num_regions: int
) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = _default_keys(height, width, region_size, num_regions)
    positions = np.array(pos, dtype=np.int64).reshape(-1, 2)
    negative_positions = np.array(neg, dtype=np.int64).reshape(len(neg), -1, 2)
    positions.setflags(write=False)
    negative_positions.setflags(write=False)
    return positions, negative_positions


def local_region_positions(
    map_size: int | tuple[int, int], *, region_size: int = 3, num_regions: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    r"""Default region positions and their negative-position tables for a feature-map size.

    Parameters
    ----------
    map_size : int or tuple of (int, int)
        Spatial size of the feature maps: ``m`` for square ``m×m`` maps or ``(H, W)``.
    region_size : {3, 1}, default 3
        Side K of the square regions.
    num_regions : {13, 9}, default 13
        Number of regions R: the paper's 13-point pattern (corners, edge mid-points, centre and
        the four quarter points) or its first nine points.

    Returns
    -------
    positions : ndarray of int64, shape (R, 2)
        Top-left corners ``(x, y)`` of the regions (``x`` along H, ``y`` along W).
    negative_positions : ndarray of int64, shape (R, 5, 2)
        For each region, the top-left corners of its 5 negative regions, in the original order
        (the first J entries are used when fewer negatives are wanted). Both arrays are
        read-only.

    Raises
    ------
    ValueError
        If `region_size` is not 1 or 3, `num_regions` is not 13 or 9, or the map is too small
        for the pattern's points to be distinct.
    TypeError
        If `map_size` is not an int or a pair of ints.

    See Also
    --------
    extract_regions : Gather the regions at these positions.
    local_contrastive_loss : The loss that uses them.

    Notes
    -----
    Per axis of size ``m``, the last start is :math:`e = m - 4` for 3×3 regions (the original
    never touches the last row/column) and :math:`e = m - 1` for 1×1 regions; the grid points are
    :math:`0`, :math:`q = \lfloor e/4 \rfloor`, :math:`h = \lfloor e/2 \rfloor`,
    :math:`t = \lfloor 3e/4 \rfloor` and :math:`e`. The 13 positions are (0,0) (0,h) (0,e)
    (h,0) (h,h) (h,e) (e,0) (e,h) (e,e) (q,q) (q,t) (t,q) (t,t). The negative tables are the
    authors' hand-picked lists; the 13-region tables differ between K = 3 and K = 1.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> from contrastlocal.functional import local_region_positions
    >>> positions, negatives = local_region_positions(48)
    >>> positions.shape, negatives.shape
    ((13, 2), (13, 5, 2))
    >>> positions[:5].tolist()
    [[0, 0], [0, 22], [0, 44], [22, 0], [22, 22]]
    >>> negatives[0].tolist()
    [[0, 22], [11, 11], [11, 22], [22, 0], [22, 11]]
    """
    height, width = _map_size_pair(map_size)
    k = check_region_size(region_size)
    check_choice(num_regions, (13, 9), "num_regions")
    return _default_tables(height, width, k, int(num_regions))


def _check_bounds(points: np.ndarray, height: int, width: int, region_size: int, name: str) -> None:
    _check_bounds_key(points_key(points), height, width, region_size, name)


def _check_bounds_key(
    points: PointsKey, height: int, width: int, region_size: int, name: str
) -> None:
    """Every K×K region at the given top-left corners fits in the maps (pure Python)."""
    for x, y in points:
        if x >= 0 and y >= 0 and x + region_size <= height and y + region_size <= width:
            continue
        first = (x, y)
        msg = (
            f"`{name}` is out of bounds: a {region_size}x{region_size} region at top-left "
            f"{first} does not fit in {height}x{width} maps (need 0 <= x <= {height - region_size}"
            f" and 0 <= y <= {width - region_size})."
        )
        raise ValueError(msg)


def _flat_indices(points: PointsKey, width: int, region_size: int) -> tuple[int, ...]:
    """Return indices into the flattened ``H*W`` grid of every K×K block, (P*K*K,), pure Python.

    (P, K, K) in (point, row offset, column offset) order, flattened row-major.
    """
    k = range(region_size)
    return tuple((x + dx) * width + y + dy for x, y in points for dx in k for dy in k)


_INDEX_ARRAYS: dict[tuple[Any, ...], Array] = {}


def _index_array(values: tuple[int, ...], like: Array, *, xp: Namespace) -> Array:
    """`values` as an integer array on the device of `like`, built once per device (eager).

    Building it from a Python list on an accelerator is a host-to-device copy that waits for
    the device; cached, every later call reuses the array (no copy, no synchronisation). Under
    ``torch.compile`` the list is a constant of the graph and nothing is cached.
    """
    dev = device(like)
    torch = sys.modules.get("torch")
    if torch is not None and bool(torch.compiler.is_compiling()):
        return xp.asarray(list(values), device=dev)
    key = (xp.__name__, str(dev), values)
    array = _INDEX_ARRAYS.get(key)
    if array is None:
        if len(_INDEX_ARRAYS) >= 256:
            _INDEX_ARRAYS.clear()
        array = _INDEX_ARRAYS[key] = xp.asarray(list(values), device=dev)
    return array


def _gather_regions(
    features: Array, indices: tuple[int, ...], num_points: int, region_size: int, *,
    xp: Namespace,
) -> Array:
    """Gather regions: features (N, C, H, W), flat indices (P*K*K,) -> (N, P, K*K*C)."""
    n, c, h, w = (int(v) for v in features.shape)
    kk = region_size * region_size
    flat = xp.reshape(features, (n, c, h * w))
    idx = _index_array(indices, features, xp=xp)
    taken = xp.take(flat, idx, axis=2)  # (N, C, P*K*K)
    taken = xp.reshape(taken, (n, c, num_points, kk))
    taken = xp.permute_dims(taken, (0, 2, 3, 1))  # (N, P, K*K, C)
    return xp.reshape(taken, (n, num_points, kk * c))


def _check_feature_maps(features: Array, name: str, *, xp: Namespace) -> tuple[int, ...]:
    """Validate (N, C, H, W) floating feature maps with known sizes; return the shape."""
    check_ndim(features, 4, name, "(N, C, H, W)")
    check_floating(features, name, xp=xp)
    shape = shape_of(features)
    if any(v is None for v in shape):
        msg = f"`{name}` must have a known shape (N, C, H, W); got shape {shape}."
        raise ValueError(msg)
    return tuple(int(v) for v in shape if v is not None)


def extract_regions(features: Array, positions: Any, *, region_size: int = 3) -> Array:
    """Flatten the K×K regions of feature maps at the given top-left positions.

    Parameters
    ----------
    features : array of shape (N, C, H, W)
        Feature maps, channel-first. Any array API array (NumPy, PyTorch, JAX, CuPy).
    positions : int array-like of shape (R, 2)
        Top-left corners ``(x, y)`` of the regions, ``x`` along H and ``y`` along W. Static
        settings: read with NumPy (pass a NumPy array or nested lists).
    region_size : {3, 1}, default 3
        Side K of the square regions.

    Returns
    -------
    array of shape (N, R, K*K*C)
        Region vectors, each the K×K×C block flattened in (row offset, column offset, channel)
        order; same namespace, device and dtype as `features`.

    Raises
    ------
    ValueError
        If `features` is not 4-D, `region_size` is not 1 or 3, `positions` is not (R, 2), or a
        region does not fit in the maps.
    TypeError
        If `features` is not floating or `positions` does not hold integers.

    See Also
    --------
    local_region_positions : The paper's default positions.

    Notes
    -----
    The gather is one ``take`` along the flattened spatial axis, so it works on every array API
    backend (no boolean masks, no data-dependent shapes) and carries gradients.

    References
    ----------
    .. [1] K. Chaitanya, E. Erdil, N. Karani, E. Konukoglu, "Contrastive learning of global and
       local features for medical image segmentation with limited annotations", NeurIPS 2020,
       arXiv:2006.10511.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.functional import extract_regions
    >>> f = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    >>> extract_regions(f, [[0, 0], [2, 1]], region_size=1)[0].tolist()
    [[0.0], [9.0]]
    >>> extract_regions(f, [[1, 1]], region_size=3).shape
    (2, 1, 9)
    >>> extract_regions(f, [[1, 1]], region_size=3)[0, 0].tolist()
    [5.0, 6.0, 7.0, 9.0, 10.0, 11.0, 13.0, 14.0, 15.0]
    """
    xp = array_namespace(features)
    _, _, h, w = _check_feature_maps(features, "features", xp=xp)
    k = check_region_size(region_size)
    pos = as_positions(positions, "positions", 2, "(R, 2)")
    _check_bounds(pos, h, w, k, "positions")
    idx = _flat_indices(points_key(pos), w, k)
    return _gather_regions(features, idx, int(pos.shape[0]), k, xp=xp)
