"""Loop-based NumPy oracles written from the paper's equations, one term at a time.

They are deliberately slow and plain: no masks, no log-sum-exp tricks beyond what float64 needs,
no vectorisation, so that they are an independent check of the package's dense implementation.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Float = npt.NDArray[np.float64]


def normalize_rows(z: Float) -> tuple[Float, Float]:
    """Unit rows and their norms (float64, loop over rows)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros_like(z)
    norms = np.zeros(z.shape[0])
    for i in range(z.shape[0]):
        norms[i] = math.sqrt(sum(float(v) * float(v) for v in z[i]))
        out[i] = z[i] / norms[i]
    return out, norms


def global_pairs(image_ids, partition_ids, strategy):
    """(anchor, positive, negatives) triples of a strategy, straight from DESIGN.md §3's table."""
    n = len(image_ids)
    triples = []
    for a in range(n):
        if strategy == "domain":
            positives = [p for p in range(n) if p != a and partition_ids[p] == partition_ids[a]]
        else:
            positives = [p for p in range(n) if p != a and image_ids[p] == image_ids[a]]
        if strategy == "random":
            negatives = [k for k in range(n) if image_ids[k] != image_ids[a]]
        else:
            negatives = [k for k in range(n) if partition_ids[k] != partition_ids[a]]
        triples.extend((a, p, negatives) for p in positives)
    return triples


def term_loss(s: Float, a: int, p: int, negatives: list[int]) -> float:
    """ℓ(a, p) = -log(e^{s_ap} / (e^{s_ap} + Σ_k e^{s_ak})), one term, max-shifted in float64."""
    values = [s[a, p]] + [s[a, k] for k in negatives]
    m = max(values)
    denominator = sum(math.exp(v - m) for v in values)
    return -(s[a, p] - m - math.log(denominator))


def term_loss_and_grad(s: Float, a: int, p: int, negatives: list[int]) -> tuple[float, dict]:
    """ℓ(a, p) and its partial derivatives d ℓ / d s[a, k] (a dict over k)."""
    values = [s[a, p]] + [s[a, k] for k in negatives]
    m = max(values)
    denominator = sum(math.exp(v - m) for v in values)
    grads: dict[int, float] = {p: -1.0}
    # d/ds_ak of log(e^{s_ap} + Σ e^{s_ak}) = softmax weight, summed if k repeats
    for k in [p, *negatives]:
        grads[k] = grads.get(k, 0.0) + math.exp(s[a, k] - m) / denominator
    return -(s[a, p] - m - math.log(denominator)), grads


def pairing_loss_and_grad(
    z: Float, triples, temperature: float, normalizer: float | None = None, weights=None
) -> tuple[float, Float]:
    """Loss Σ w·ℓ / normaliser over (anchor, positive, negatives) triples and its gradient wrt z.

    The gradient is analytic, one entry at a time: dL/ds_ij from each term, then s = ẑẑᵀ/τ
    (dL/dẑ_i = Σ_j (G_ij + G_ji) ẑ_j / τ) and ẑ = z/‖z‖ (dz = (g − ẑ (ẑ·g)) / ‖z‖).
    """
    zh, norms = normalize_rows(z)
    n, d = zh.shape
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            s[i, j] = sum(zh[i, t] * zh[j, t] for t in range(d)) / temperature
    if weights is None:
        weights = [1.0] * len(triples)
    total = 0.0
    g_s = np.zeros((n, n))
    for (a, p, negatives), w in zip(triples, weights, strict=True):
        value, grads = term_loss_and_grad(s, a, p, negatives)
        total += w * value
        for k, gk in grads.items():
            g_s[a, k] += w * gk
    if normalizer is None:
        normalizer = float(sum(weights))
    total /= normalizer
    g_s /= normalizer
    g_zh = np.zeros((n, d))
    for i in range(n):
        for j in range(n):
            for t in range(d):
                g_zh[i, t] += (g_s[i, j] + g_s[j, i]) * zh[j, t] / temperature
    g_z = np.zeros((n, d))
    for i in range(n):
        dot = sum(zh[i, t] * g_zh[i, t] for t in range(d))
        for t in range(d):
            g_z[i, t] = (g_zh[i, t] - zh[i, t] * dot) / norms[i]
    return total, g_z


def global_loss(z, image_ids, partition_ids, strategy, temperature, reduction="mean"):
    """The global loss: mean (or sum) over all (anchor, positive) terms, or the (N, N) terms."""
    zh, _ = normalize_rows(z)
    n = zh.shape[0]
    s = np.array([[float(np.dot(zh[i], zh[j])) / temperature for j in range(n)] for i in range(n)])
    terms = np.zeros((n, n))
    for a, p, negatives in global_pairs(image_ids, partition_ids, strategy):
        terms[a, p] = term_loss(s, a, p, negatives)
    count = len(global_pairs(image_ids, partition_ids, strategy))
    if reduction == "none":
        return terms
    if reduction == "sum":
        return float(terms.sum())
    return float(terms.sum()) / count


def global_loss_and_grad(z, image_ids, partition_ids, strategy, temperature):
    """Mean global loss and its gradient wrt the raw embeddings (analytic, loop-based)."""
    triples = global_pairs(image_ids, partition_ids, strategy)
    return pairing_loss_and_grad(np.asarray(z, dtype=np.float64), triples, temperature)


# --------------------------------------------------------------------------------------------
# the original code's index arithmetic (REFERENCE.md §1.2-1.3), transcribed literally
# --------------------------------------------------------------------------------------------


def original_gdminus_terms(batch_size: int, num_partitions: int):
    """exp 1: for each image k, six ordered pairs of {k, B+k, 2B+k}, one denominator set E_k."""
    b, n = batch_size, 3 * batch_size
    triples = []
    for k in range(b):
        rho = k % num_partitions
        excluded = {r for r in range(n) if r >= rho and (r - rho) % 4 == 0}
        negatives = [r for r in range(n) if r not in excluded]
        i1, i2, i3 = k, b + k, 2 * b + k
        for a, p in [(i1, i2), (i2, i1), (i1, i3), (i3, i1), (i2, i3), (i3, i2)]:
            triples.append((a, p, negatives))
    return triples, float(3 * b)


def original_gd_terms(batch_size: int, num_partitions: int):
    """exp 2: bs/factor table, anchor groups a mod 2S < S, eight terms with the set of E_a."""
    b, s = batch_size, num_partitions
    if s == 4:
        bs, factor = 4 * b, (4 if b == 12 else 40)
    elif s == 3:
        bs, factor = 4 * b + 5, 5
    elif s == 6:
        bs, factor = 5 * b + 4, 2
    else:
        msg = "bs/factor undefined in the original"
        raise NameError(msg)
    triples = []
    for a in range(bs):
        if a % (2 * s) >= s:
            continue
        i0, i1, i2, i3 = a, (a + s) % bs, (a + 2 * s) % bs, (a + 3 * s) % bs
        excluded = {(a + k * s) % bs for k in range(factor * s)}
        negatives = [r for r in range(bs) if r not in excluded]
        for x, y in [(i0, i1), (i1, i0), (i0, i2), (i2, i0), (i2, i3), (i3, i2), (i1, i3),
                     (i3, i1)]:
            triples.append((x, y, negatives))
    return triples, float(4 * b), bs


def original_loss(z, triples, normalizer: float, temperature: float) -> float:
    """Σ terms / normaliser with each term's own denominator set (duplicates counted again)."""
    zh, _ = normalize_rows(z)
    s = (zh @ zh.T) / temperature
    return sum(term_loss(s, a, p, negatives) for a, p, negatives in triples) / normalizer
