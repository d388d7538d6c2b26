"""Loop references of the authors' global losses, written from REFERENCE.md §1 (not the package).

Every term is listed one by one with its anchor, its positive, its denominator set (built by a
loop over the index arithmetic the reference describes) and whether the positive is added to the
denominator explicitly; the loss is then a loop over the terms with exp and log, as the
authors' graph computes it. Works on NumPy arrays and on torch tensors (for autograd).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Term = tuple[int, int, list[int], bool]  # anchor, positive, denominator rows, explicit positive


def rows_fed(strategy: str, b: int, s: int) -> int:
    """Rows the authors' script feeds (REFERENCE.md §1.1-1.3)."""
    if strategy == "random":
        return 2 * b
    if strategy == "domain_negatives":
        return 3 * b
    return 4 * b if s == 4 else 5 * b + 4  # max_bz of stitch_batch_global_loss_gd


def gd_stitched_rows(b: int, s: int) -> list[tuple[int, int, int, int] | None]:
    """G^D batch as the stitching loop writes it: (set, volume, view, partition) or None (blank).

    Blocks of 4S rows [set-1 volume | its augmentations | set-2 volume | its augmentations]; the
    loop stops as soon as ``i + 4S >= max_bz``.
    """
    max_bz = rows_fed("domain", b, s)
    rows: list[tuple[int, int, int, int] | None] = [None] * max_bz
    i = 0
    vol = 0
    while not (i + 4 * s >= max_bz):
        for which_set in (0, 1):
            for view in (0, 1):
                for p in range(s):
                    rows[i] = (which_set, vol, view, p)
                    i += 1
        vol += 1
    return rows


def random_terms(b: int) -> tuple[list[Term], float]:
    """G^R (exp 0, commented code): rows 2i, 2i+1 two views; SimCLR terms; divide by 2B."""
    n = 2 * b
    terms: list[Term] = []
    for i in range(b):
        for a, p in ((2 * i, 2 * i + 1), (2 * i + 1, 2 * i)):
            terms.append((a, p, [r for r in range(n) if r != a], False))
    return terms, float(2 * b)


def gdminus_terms(b: int, s: int) -> tuple[list[Term], float]:
    """G^{D−} (exp 1): rows [x | t1(x) | t2(x)], six ordered pairs per image, step-4 exclusion."""
    n = 3 * b
    terms: list[Term] = []
    for k in range(b):
        i1, i2, i3 = k, b + k, 2 * b + k
        rho = k % s
        excluded = set()
        for r in range(n):
            if r >= rho and (r - rho) % 4 == 0:
                excluded.add(r)
        denominator = [r for r in range(n) if r not in excluded]
        for a, p in ((i1, i2), (i2, i1), (i1, i3), (i3, i1), (i2, i3), (i3, i2)):
            terms.append((a, p, denominator, True))
    return terms, float(3 * b)


def gd_bs_factor(b: int, s: int) -> tuple[int, int]:
    """The `bs` and `factor` table of models.py (REFERENCE.md §1.3)."""
    if s == 4:
        return 4 * b, (4 if b == 12 else 40)
    if s == 3:
        return 4 * b + 5, 5
    if s == 6:
        return 5 * b + 4, 2
    raise ValueError(s)


def gd_terms(b: int, s: int) -> tuple[list[Term], float]:
    """G^D (exp 2): anchor groups a mod 2S < S, members (a + mS) mod bs, eight terms each."""
    bs, factor = gd_bs_factor(b, s)
    terms: list[Term] = []
    for a in range(bs):
        if a % (2 * s) >= s:
            continue
        i0, i1, i2, i3 = a, (a + s) % bs, (a + 2 * s) % bs, (a + 3 * s) % bs
        excluded = set()
        for k in range(factor * s):
            excluded.add((a + k * s) % bs)
        denominator = [r for r in range(bs) if r not in excluded]
        for anchor, positive in ((i0, i1), (i1, i0), (i0, i2), (i2, i0), (i2, i3), (i3, i2),
                                 (i1, i3), (i3, i1)):
            terms.append((anchor, positive, denominator, True))
    return terms, float(4 * b)


def terms_for(strategy: str, b: int, s: int) -> tuple[list[Term], float]:
    if strategy == "random":
        return random_terms(b)
    if strategy == "domain_negatives":
        return gdminus_terms(b, s)
    return gd_terms(b, s)


def loss(z: Any, terms: list[Term], normalizer: float, temperature: float) -> Any:
    """Sum over the terms of -log(e^{s(a,p)} / denominator), divided by the normaliser."""
    try:
        import torch

        lib: Any = torch if isinstance(z, torch.Tensor) else np
    except ImportError:
        lib = np
    rows = []
    for r in range(z.shape[0]):
        sq = (z[r] * z[r]).sum()
        norm = lib.sqrt(sq.clip(min=1e-12))  # TF l2_normalize: max(|z|^2, 1e-12)
        rows.append(z[r] / norm)
    zn = lib.stack(rows)
    sim = (zn @ zn.T) / temperature
    total = 0.0
    for a, p, denominator, explicit in terms:
        s_ap = sim[a, p]
        den = lib.exp(sim[a, denominator]).sum()
        if explicit:
            den = den + lib.exp(s_ap)
        total = total - lib.log(lib.exp(s_ap) / den)
    return total / normalizer
