"""The authors' global losses, exactly (G^R = exp 0, G^{D−} = exp 1, G^D = exp 2).

The authors' code builds its terms from row-index arithmetic rather than from metadata. Two
forms live here:

* :func:`original_global_loss` evaluates that arithmetic for every (batch size, S) the authors'
  code accepts: each term carries the excluded set of its anchor *group*, so terms whose
  denominators are not one negative set per anchor row (G^D at S = 3 or 6, or B > 160) are
  exact too. :func:`original_global_layout` says what each row of the batch it expects holds.
* :func:`original_global_pairing` turns the arithmetic into the kernel's (W, M, normaliser) where
  one negative set per anchor row suffices, so that
  :func:`~contrastlocal.functional.masked_contrastive_loss` reproduces the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._array_api import array_namespace, compute_dtype, device, is_torch_namespace
from .._typing import GLOBAL_STRATEGIES, Array
from .._validation import (
    check_choice,
    check_floating,
    check_int_in_range,
    check_ndim,
    check_positive,
    shape_of,
)
from ._kernel import explicit_positive_nll, negative_logsumexp

__all__ = ["original_global_layout", "original_global_loss", "original_global_pairing"]

OriginalStrategy = Literal["domain_negatives", "domain"]
OriginalLossStrategy = Literal["random", "domain_negatives", "domain"]

#: S values the authors' G^D accepts (models.py defines `bs` and `factor` for these only).
_DOMAIN_PARTITIONS: tuple[int, ...] = (3, 4, 6)
#: The authors' l2_normalize floor on the squared norm.
_AUTHORS_EPS = 1e-12


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
    original_global_loss : The authors' value for every setting, as one function.
    masked_contrastive_loss : The kernel that evaluates the pairing.
    global_contrastive_loss : The paper's definitions (the package default).

    Notes
    -----
    Reproducible: G^{D−} for every B ≥ 1 and S ≥ 1, including its buggy layouts (B mod 4 ≠ 0 or
    S ≠ 4: the hard-coded step 4 of its excluded set then leaves same-partition rows, even the
    positive or the anchor itself, in the denominator; every term of an anchor row uses the same
    set, so a per-anchor mask expresses it exactly). G^D at S = 4 for 1 ≤ B ≤ 160 (any B, also
    not divisible by 4: the ring of slots and its wrap-around follow the index arithmetic).

    Not reproducible with a per-anchor negative mask (:func:`original_global_loss` evaluates
    them exactly):

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
               f"mask can express (original_global_loss gives those values), and other S crash "
               f"in the original; got {num_partitions}.")
        raise ValueError(msg)
    if batch_size > 160:
        msg = (f"`batch_size` must be at most 160 for the original G^D (strategy='domain'): "
               f"beyond, its excluded sets (factor 40) depend on the anchor group; got "
               f"{batch_size} (original_global_loss gives the value for any B).")
        raise ValueError(msg)
    return _domain(batch_size)


# --------------------------------------------------------------------------------------------
# the exact loss: index tables built on the host from (strategy, B, S), evaluated vectorised
# --------------------------------------------------------------------------------------------


def _check_setting(strategy: object, batch_size: object, num_partitions: object) -> tuple[
    str, int, int
]:
    check_choice(strategy, GLOBAL_STRATEGIES, "strategy")
    b = check_int_in_range(batch_size, "batch_size", low=1)
    s = check_int_in_range(num_partitions, "num_partitions", low=1)
    if strategy == "domain" and s not in _DOMAIN_PARTITIONS:
        msg = (f"`num_partitions` must be one of 3, 4, 6 for the authors' G^D "
               f"(strategy='domain'): their code defines its row count and exclusion table only "
               f"for these S (any other S stops it with a NameError); got {s}.")
        raise ValueError(msg)
    return str(strategy), b, s


def _rows(strategy: str, b: int, s: int) -> tuple[int, str, int, str]:
    """(rows fed, how that count is computed, rows the loss reads, how that one is computed)."""
    if strategy == "random":
        return 2 * b, "2B", 2 * b, "2B"
    if strategy == "domain_negatives":
        return 3 * b, "3B", 3 * b, "3B"
    if s == 4:
        return 4 * b, "4B", 4 * b, "4B"
    used, used_how = (4 * b + 5, "4B + 5") if s == 3 else (5 * b + 4, "5B + 4")
    return 5 * b + 4, "5B + 4", used, used_how


@dataclass(frozen=True)
class _Terms:
    rows: int  # rows fed
    used: int  # rows the loss reads (the first `used` rows)
    anchor: npt.NDArray[np.int64]  # (T,) anchor row of every term
    positive: npt.NDArray[np.int64]  # (T,) positive row of every term
    unit: npt.NDArray[np.int64]  # (T,) index of the term's (group, anchor) denominator
    unit_anchor: npt.NDArray[np.int64]  # (U,) anchor row of every denominator
    unit_negatives: npt.NDArray[np.bool_]  # (U, used) its negative set
    explicit: bool  # e^{s(a,p)} added to the denominator (False: SimCLR term, p in the set)
    normalizer: float


def _group_terms(
    members: npt.NDArray[np.int64],
    negatives: npt.NDArray[np.bool_],
    pairs: tuple[tuple[int, int], ...],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
           npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    # members (G, V): the rows of every group; negatives (G, used): the group's denominator set;
    # pairs: (anchor member, positive member) of every term of a group.
    g, v = members.shape
    unit_anchor = members.reshape(-1)
    unit_negatives = np.repeat(negatives, v, axis=0)
    groups = np.arange(g)
    anchor = np.concatenate([members[:, m] for m, _ in pairs])
    positive = np.concatenate([members[:, n] for _, n in pairs])
    unit = np.concatenate([groups * v + m for m, _ in pairs])
    return anchor, positive, unit, unit_anchor, unit_negatives


@lru_cache(maxsize=32)
def _global_terms(strategy: str, b: int, s: int) -> _Terms:
    rows, _, used, _ = _rows(strategy, b, s)
    if strategy == "random":
        # exp 0 (commented out in the original): rows 2i, 2i+1 are the two views of slice i;
        # SimCLR terms over every other row, mean over the 2B terms.
        r = np.arange(rows)
        negatives = r[:, None] != r[None, :]
        partner = r ^ 1
        return _Terms(rows, used, r, partner, r, r, negatives, False, float(2 * b))
    if strategy == "domain_negatives":
        # exp 1: image k's rows k, B + k, 2B + k; its six ordered pairs share the set
        # [0, 3B) minus {r >= rho, (r - rho) mod 4 == 0}, rho = k mod S (step 4 hard-coded).
        k = np.arange(b)
        members = np.stack([k, b + k, 2 * b + k], axis=1)
        cols = np.arange(used)[None, :]
        rho = (k % s)[:, None]
        negatives = ~((cols >= rho) & ((cols - rho) % 4 == 0))
        pairs: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1))
        normalizer = float(3 * b)
    else:
        # exp 2: anchor groups a in [0, bs) with a mod 2S < S, members (a + mS) mod bs,
        # m = 0..3; every term of the group uses [0, bs) minus {(a + kS) mod bs, k < factor S}.
        factor = {4: 4 if b == 12 else 40, 3: 5, 6: 2}[s]
        a = np.arange(used)
        a = a[a % (2 * s) < s]
        members = (a[:, None] + s * np.arange(4)[None, :]) % used
        excluded = (a[:, None] + s * np.arange(factor * s)[None, :]) % used
        negatives = np.ones((len(a), used), dtype=bool)
        np.put_along_axis(negatives, excluded, False, axis=1)
        pairs = ((0, 1), (1, 0), (0, 2), (2, 0), (2, 3), (3, 2), (1, 3), (3, 1))
        normalizer = float(4 * b)
    anchor, positive, unit, unit_anchor, unit_negatives = _group_terms(members, negatives, pairs)
    return _Terms(rows, used, anchor, positive, unit, unit_anchor, unit_negatives, True,
                  normalizer)


def original_global_layout(
    strategy: OriginalLossStrategy, batch_size: int, num_partitions: int = 4
) -> dict[str, npt.NDArray[np.int64] | npt.NDArray[np.bool_]]:
    """Say what each row of the authors' global-loss batch holds, blank rows included.

    This is the batch :func:`original_global_loss` expects, row by row, as the authors' training
    script assembles it (REFERENCE layout of ``global_loss_exp_no`` 0, 1 and 2).

    Parameters
    ----------
    strategy : {"random", "domain_negatives", "domain"}
        G^R (exp 0), G^{D−} (exp 1) or G^D (exp 2); see :func:`original_global_loss`.
    batch_size : int
        The original ``B`` (``--bt_size``), at least 1.
    num_partitions : int, default 4
        The original ``S``; 3, 4 or 6 for ``"domain"``, unused by ``"random"``.

    Returns
    -------
    dict of str to ndarray of shape (N,)
        N = the rows fed (2B for G^R, 3B for G^{D−}, 4B for G^D at S = 4, 5B + 4 at S = 3, 6).
        ``"set"``: the sampled set of volumes a row comes from (G^D draws two sets
        independently, 0 and 1; otherwise 0), ``"volume"``: its volume's position in that set's
        random order (-1 for G^R, whose slices come from all volumes at once), ``"partition"``
        (-1 for G^R), ``"image"``: the index of the sampled slice the row shows (rows showing
        views of one slice share it), ``"view"``: 0 = the slice itself, 1 and 2 = independent
        augmentations (crop + intensity), ``"blank"`` (bool): an all-zero image the original
        feeds (G^D's stitching stops one block early), ``"used"`` (bool): the loss reads the row
        (G^D at S = 3 reads only its first 4B + 5 rows). Integer fields are -1 on blank rows.

    Raises
    ------
    TypeError
        If `batch_size` or `num_partitions` is not an integer.
    ValueError
        If `strategy` is unknown or S is not one the authors' code accepts.

    See Also
    --------
    original_global_loss : The loss evaluated on a batch in this layout.

    Notes
    -----
    G^D writes blocks of 4S rows ``[set-0 volume b: slices of partitions 0..S-1 | their
    augmentations | set-1 volume b: slices | augmentations]`` for b = 0, 1, ... while the next
    block would end *before* the last row fed; the rest stays blank. The sets hold as many
    volumes as blocks are written, so a large B needs many pre-training volumes (B = 40,
    S = 4: 9 per set).

    Examples
    --------
    >>> from contrastlocal.functional import original_global_layout
    >>> layout = original_global_layout("domain", 12)
    >>> len(layout["blank"]), int(layout["blank"].sum())
    (48, 16)
    >>> layout["partition"][:8].tolist(), layout["view"][:8].tolist()
    ([0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 1, 1])
    """
    name, b, s = _check_setting(strategy, batch_size, num_partitions)
    rows, _, used, _ = _rows(name, b, s)
    r = np.arange(rows)
    blank = np.zeros(rows, dtype=bool)
    sets = np.zeros(rows, dtype=np.int64)
    if name == "random":
        image = r // 2
        view = r % 2 + 1
        volume = np.full(rows, -1, dtype=np.int64)
        partition = np.full(rows, -1, dtype=np.int64)
    elif name == "domain_negatives":
        image = r % b
        view = r // b
        volume = image // s
        partition = image % s
    else:
        block = 4 * s
        written = 0
        while written + block < rows:  # the original's loop stops at `i + 4S >= max_bz`
            written += block
        within = r % block
        sets = within // (2 * s)
        view = (within % (2 * s)) // s
        partition = within % s
        volume = r // block
        image = (volume * 2 + sets) * s + partition
        blank = r >= written
    out: dict[str, npt.NDArray[np.int64] | npt.NDArray[np.bool_]] = {}
    for name, values in (("set", sets), ("volume", volume), ("partition", partition),
                         ("image", image), ("view", view)):
        out[name] = np.where(blank, -1, values).astype(np.int64)
    out["blank"] = blank
    out["used"] = r < used
    return out


def original_global_loss(
    embeddings: Array,
    *,
    strategy: OriginalLossStrategy,
    batch_size: int,
    num_partitions: int = 4,
    temperature: float = 0.1,
) -> Array:
    """Compute the authors' global contrastive loss, for every setting their code accepts.

    `embeddings` are the rows the authors' training script feeds, in their order, blank rows
    included (:func:`original_global_layout` says what each row holds); the result is the value
    their TensorFlow graph computes on them (up to float rounding), differentiable in
    `embeddings`.

    Parameters
    ----------
    embeddings : floating array of shape (N, D)
        One embedding (the g_1 output) per row fed. N is fixed by the setting: 2B for
        ``"random"``, 3B for ``"domain_negatives"``, 4B for ``"domain"`` at S = 4 and 5B + 4 at
        S = 3 or 6 (of which S = 3 reads the first 4B + 5 only; the rest get a zero gradient).
    strategy : {"random", "domain_negatives", "domain"}
        ``"random"``: G^R (``global_loss_exp_no = 0``, commented out in the released code; its
        commented semantics: rows 2i, 2i+1 are two views of slice i, NT-Xent over all other
        rows, divided by 2B). ``"domain_negatives"``: G^{D−} (exp 1): image k's three rows
        k, B + k, 2B + k, six ordered pairs, the excluded set of the hard-coded step 4, divided
        by 3B. ``"domain"``: G^D (exp 2, the proposed loss): anchor groups, ring pairs, the
        ``bs``/``factor`` tables, eight terms per group, divided by 4B.
    batch_size : int
        The original ``B`` (``--bt_size``), at least 1; any B, also B > 160.
    num_partitions : int, default 4
        The original ``S``: 3, 4 or 6 for ``"domain"``; any S ≥ 1 for ``"domain_negatives"``
        (only its ``k mod S`` uses it); unused by ``"random"``.
    temperature : float, default 0.1
        The temperature τ (``--temp_fac``).

    Returns
    -------
    array of shape ()
        The loss, in the embeddings' library and device (float64 input gives float64,
        anything else float32).

    Raises
    ------
    TypeError
        If `embeddings` is not a floating array or `batch_size`/`num_partitions` not integers.
    ValueError
        If `strategy` is unknown, S is one the authors' code does not accept, `temperature` is
        not positive, or `embeddings` has not the row count the setting feeds (the message says
        how that count is computed).

    See Also
    --------
    original_global_layout : What each row of the batch holds.
    original_global_pairing : The same values as kernel masks, where one set per anchor fits.
    global_contrastive_loss : The paper's definitions (the package default).

    Notes
    -----
    Cosine similarities are ``ẑ_a · ẑ_k / τ`` with ``ẑ = z / sqrt(max(|z|², 1e-12))`` (the
    original's normalisation). A term with anchor a, positive p and group g is
    ``-log(e^{s(a,p)} / (e^{s(a,p)} + Σ_{k ∈ N_g} e^{s(a,k)}))`` (G^R:
    ``-log(e^{s(a,p)} / Σ_{k ≠ a} e^{s(a,k)})``); an anchor or positive inside ``N_g`` is
    counted again, as in the original. The denominator set belongs to the anchor *group*: for
    G^D at S = 3 or 6 (row counts not multiples of S) and for B > 160 (``factor = 40`` covers
    only 160 rows of a partition) one row anchors terms of two groups with two different sets,
    which is why :func:`original_global_pairing` cannot express those settings and this
    function can. Evaluation uses log-sum-exp (no overflow for small τ, same value otherwise).
    The index tables are built once per (strategy, B, S) on the host and cached; the loss itself
    is a handful of vectorised array operations.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.functional import original_global_layout, original_global_loss
    >>> z = np.random.default_rng(0).normal(size=(64, 16))  # G^D, B = 12, S = 3: 5B + 4 rows
    >>> z[original_global_layout("domain", 12, 3)["blank"]] = 0.5  # blank rows: equal embeddings
    >>> loss = original_global_loss(z, strategy="domain", batch_size=12, num_partitions=3)
    >>> loss.shape, bool(loss > 0)
    ((), True)
    """
    loss = prepare_original_global_loss(
        embeddings, strategy=strategy, batch_size=batch_size, num_partitions=num_partitions,
        temperature=temperature,
    )
    return loss(embeddings)


def prepare_original_global_loss(
    example: Array,
    *,
    strategy: OriginalLossStrategy,
    batch_size: int,
    num_partitions: int = 4,
    temperature: float = 0.1,
) -> Callable[[Array], Array]:
    """Check a setting of :func:`original_global_loss` once and return the loss for it (private).

    `example` (the shape, library and device of every later call's embeddings) is validated
    here and the index tables are put on its device now, so the returned function does array
    operations only: no NumPy, no host-to-device copy, traced by ``torch.compile`` and captured
    in a CUDA graph as it is. The training stages call it on every step.
    """
    name, b, s = _check_setting(strategy, batch_size, num_partitions)
    tau = check_positive(temperature, "temperature")
    xp = array_namespace(example)
    check_ndim(example, 2, "embeddings", "(N, D)")
    check_floating(example, "embeddings", xp=xp)
    rows, rows_how, used, used_how = _rows(name, b, s)
    if example.shape[0] != rows:
        setting = f"strategy={name!r}, batch_size={b}" + (
            f", num_partitions={s}" if name != "random" else "")
        reads = f"; the loss reads the first {used_how} = {used}" if used != rows else ""
        msg = (f"`embeddings` must have {rows_how} = {rows} rows for {setting} (the rows the "
               f"authors' script feeds, blank rows included{reads}); got shape "
               f"{shape_of(example)}.")
        raise ValueError(msg)
    terms = _global_terms(name, b, s)
    dev = device(example)
    dtype = compute_dtype(example, xp=xp)

    def table(values: npt.NDArray[Any], field: str) -> Array:
        if is_torch_namespace(xp):  # one copy per device, kept (no per-call copy)
            from ._torch_kernel import device_constant

            return device_constant(("original_global", name, b, s, field), values, dev)
        return xp.asarray(values, device=dev)

    unit_anchor = table(terms.unit_anchor, "unit_anchor")
    unit_negatives = table(terms.unit_negatives, "unit_negatives")
    # the (anchor, positive) entries of the flattened (used, used) logits
    flat = table(terms.anchor * used + terms.positive, "flat")
    unit = table(terms.unit, "unit")
    # the bound as a host scalar array (as l2_normalize's): no host-to-device copy per call
    bound = xp.asarray(_AUTHORS_EPS, dtype=dtype)

    def loss(embeddings: Array) -> Array:
        z = xp.astype(embeddings[:used, ...], dtype)
        sq = xp.sum(z * z, axis=1, keepdims=True)
        z = z / xp.sqrt(xp.maximum(sq, bound))
        logits = xp.matmul(z, xp.permute_dims(z, (1, 0))) / tau
        unit_lse = negative_logsumexp(xp.take(logits, unit_anchor, axis=0), unit_negatives, xp=xp)
        unit_lse = xp.reshape(unit_lse, (-1,))
        positive_logits = xp.take(xp.reshape(logits, (-1,)), flat, axis=0)
        lse = xp.take(unit_lse, unit, axis=0)
        if terms.explicit:
            per_term = explicit_positive_nll(positive_logits, lse, xp=xp)
        else:
            per_term = lse - positive_logits
        return xp.sum(per_term) / terms.normalizer

    return loss
