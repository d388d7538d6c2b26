"""The original code's exact global-loss pairings (G^{D−} = exp 1, G^D = exp 2), as dense masks.

The authors' code builds its terms from row-index arithmetic rather than from metadata; this
module turns that arithmetic into the kernel's (W, M, normaliser), so that
:func:`~contrastlocal.functional.masked_contrastive_loss` reproduces its loss values on the same
embeddings.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from .._validation import check_choice, check_int_in_range

__all__ = ["original_global_pairing"]

OriginalStrategy = Literal["domain_negatives", "domain"]


def _domain_negatives(batch_size: int, num_partitions: int) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.bool_], float
]:
    # exp 1: rows [originals | view 1 | view 2], row r shows image r mod B (partition k mod S);
    # image k's three rows form the 6 ordered pairs, every term of image k uses the set
    # [0, 3B) minus {r >= rho, (r - rho) mod 4 == 0}, rho = k mod S (the step 4 is hard-coded).
    b = batch_size
    n = 3 * b
    rows = np.arange(n)
    image = rows % b
    weights = ((image[:, None] == image[None, :]) & (rows[:, None] != rows[None, :]))
    rho = (image % num_partitions)[:, None]
    cols = rows[None, :]
    excluded = (cols >= rho) & ((cols - rho) % 4 == 0)
    return weights.astype(np.float64), ~excluded, float(3 * b)


def _domain(batch_size: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], float]:
    # exp 2 at S = 4: bs = 4B rows; anchor groups a with a mod 8 < 4, i_m = (a + 4m) mod bs,
    # eight terms per group; the excluded set {(a + 4k) mod bs, k < 4 * factor} is the whole
    # residue class of a mod 4 whenever 4 * factor >= B (factor = 4 for B = 12, else 40).
    n = 4 * batch_size
    a = np.arange(n)
    a = a[a % 8 < 4]
    i0, i1, i2, i3 = (a + 0) % n, (a + 4) % n, (a + 8) % n, (a + 12) % n
    anchors = np.concatenate([i0, i1, i0, i2, i2, i3, i1, i3])
    positives = np.concatenate([i1, i0, i2, i0, i3, i2, i3, i1])
    weights = np.zeros((n, n), dtype=np.float64)
    np.add.at(weights, (anchors, positives), 1.0)
    partition = np.arange(n) % 4
    negatives = partition[:, None] != partition[None, :]
    return weights, negatives, float(4 * batch_size)


def original_global_pairing(
    strategy: OriginalStrategy, batch_size: int, num_partitions: int = 4
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], float]:
    """Build the original code's positive weights, negative mask and normaliser for its layout.

    Feed the returned arrays to :func:`~contrastlocal.functional.masked_contrastive_loss`
    (``normalizer=`` the returned float) with embeddings ordered as the original batch, and the
    loss equals the authors' value up to float rounding.

    Parameters
    ----------
    strategy : {"domain_negatives", "domain"}
        ``"domain_negatives"``: the original G^{D−} (``global_loss_exp_no = 1``): N = 3B rows
        ``[originals | view 1 | view 2]``, row r shows image ``r mod B`` of partition
        ``(r mod B) mod S``. ``"domain"``: the original G^D (``global_loss_exp_no = 2``), N = 4B
        rows in slots of 8: rows 8g..8g+3 = original view of partitions 0-3 of volume slot g,
        rows 8g+4..8g+7 = their augmented views. The rows the original leaves blank (all-zero
        images, e.g. rows 32-47 for B = 12) must be fed as it feeds them.
    batch_size : int
        The original ``B`` (``self.batch_size``), at least 1.
    num_partitions : int, default 4
        The original ``S`` (``n_parts``). Only 4 is reproducible for ``"domain"``.

    Returns
    -------
    positive_weights : float64 ndarray of shape (N, N)
        How many times the original counts each (anchor, positive) term (G^D counts the
        original-augmented pair of a slice twice per direction).
    negative_mask : bool ndarray of shape (N, N)
        The original denominator set of each anchor row (it may contain the anchor or its
        positive in the buggy layouts; the kernel then counts them again, as the original does).
    normalizer : float
        The original's divisor: 3B for G^{D−} (6B terms), 4B for G^D (16B terms).

    Raises
    ------
    TypeError
        If `batch_size` or `num_partitions` is not an integer.
    ValueError
        If `strategy` is unknown or the configuration is not reproducible (see Notes).

    See Also
    --------
    masked_contrastive_loss : The kernel that evaluates the pairing.
    global_contrastive_loss : The paper's definitions (the package default).

    Notes
    -----
    Reproducible: G^{D−} for every B ≥ 1 and S ≥ 1, including its buggy layouts (B mod 4 ≠ 0 or
    S ≠ 4: the hard-coded step 4 of its excluded set then leaves same-partition rows, even the
    positive or the anchor itself, in the denominator; every term of an anchor row uses the same
    set, so a per-anchor mask expresses it exactly). G^D at S = 4 for 1 ≤ B ≤ 160 (any B, also
    not divisible by 4: the ring of slots and its wrap-around follow the index arithmetic).

    Not reproducible with a per-anchor negative mask:

    * G^D with S = 3 or 6: the original's row count (4B + 5, 5B + 4) is not a multiple of S, so
      its excluded set depends on the anchor *group*, not only on the anchor row; a row that is
      the anchor of terms in two groups has two different denominators. (Any other S crashes in
      the original.)
    * G^D with B > 160 (S = 4): ``factor = 40`` then covers only 160 rows of a partition, so the
      excluded set again depends on the group.
    * ``global_loss_exp_no = 0`` (G^R) is commented out and not runnable in the original; its
      intended semantics (NT-Xent, mean over 2B terms) is ``strategy="random"`` of
      :func:`~contrastlocal.functional.global_contrastive_loss`. Exp 3, 5, ... give a constant
      and crash. Exp 4 (two augmented views) is not provided.

    References
    ----------
    Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features for
    medical image segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    The README configuration (B = 12, S = 4): 48 rows, 16B = 192 terms divided by 4B = 48.

    >>> from contrastlocal.functional import original_global_pairing
    >>> w, m, norm = original_global_pairing("domain", 12)
    >>> w.shape, int(w.sum()), norm
    ((48, 48), 192, 48.0)
    >>> int(w[0, 4]), int(w[0, 8]), int(w[0, 12])
    (2, 1, 0)
    """
    check_choice(strategy, ("domain_negatives", "domain"), "strategy")
    batch_size = check_int_in_range(batch_size, "batch_size", low=1)
    num_partitions = check_int_in_range(num_partitions, "num_partitions", low=1)
    if strategy == "domain_negatives":
        return _domain_negatives(batch_size, num_partitions)
    if num_partitions != 4:
        msg = (f"`num_partitions` must be 4 for the original G^D (strategy='domain'): with S = 3 "
               f"or 6 its excluded sets depend on the anchor group, which no per-anchor negative "
               f"mask can express, and other S crash in the original; got {num_partitions}.")
        raise ValueError(msg)
    if batch_size > 160:
        msg = (f"`batch_size` must be at most 160 for the original G^D (strategy='domain'): "
               f"beyond, its excluded sets (factor 40) depend on the anchor group; got "
               f"{batch_size}.")
        raise ValueError(msg)
    return _domain(batch_size)
