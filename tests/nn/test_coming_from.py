"""The mappings of docs/user_guide/coming_from.md: each peer's call equals ours.

Against the installed peer where the test environment has it (pytorch-metric-learning, MONAI),
against a loop written from the peer's equations otherwise (lightly).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.functional import global_contrastive_loss, global_pairing  # noqa: E402
from contrastlocal.nn import GlobalContrastiveLoss  # noqa: E402


def _views(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64))


def lightly_ntxent_loop(out0, out1, temperature):
    """lightly's NTXentLoss without memory bank, from its definition, one anchor at a time.

    Rows are the 2N views; anchor i's logits are its similarities to every other row over τ;
    the target is its other view; cross-entropy, mean over the 2N anchors.
    """
    z = torch.cat([out0, out1]).numpy()
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = out0.shape[0]
    total = 0.0
    for i in range(2 * n):
        target = (i + n) % (2 * n)
        logits = {k: float(z[i] @ z[k]) / temperature for k in range(2 * n) if k != i}
        lse = math.log(sum(math.exp(v) for v in logits.values()))
        total += lse - logits[target]
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_lightly_mapping_against_loop_reference(temperature):
    out0, out1 = _views(seed=1)
    ours = GlobalContrastiveLoss("random", temperature=temperature)(out0, out1)
    np.testing.assert_allclose(float(ours), lightly_ntxent_loop(out0, out1, temperature),
                               rtol=1e-12)
    try:  # the peer itself where it is installed (it is not in the test extra)
        from lightly.loss import NTXentLoss
    except ImportError:
        return
    theirs = NTXentLoss(temperature=temperature)(out0, out1)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-10)


def test_monai_mapping():
    monai_losses = pytest.importorskip("monai.losses")
    z0, z1 = _views(seed=2)
    theirs = monai_losses.ContrastiveLoss(temperature=0.5)(z0, z1)
    ours = GlobalContrastiveLoss("random", temperature=0.5)(z0, z1)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-10)
    # the default temperatures quoted on the page
    assert monai_losses.ContrastiveLoss().temperature == 0.5


def test_pytorch_metric_learning_mappings():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    assert pml.NTXentLoss().temperature == 0.07
    assert pml.SupConLoss().temperature == 0.1
    z = torch.cat(_views(n=8, seed=3))
    labels = torch.arange(8).repeat(2)
    partitions = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]).repeat(2)
    theirs = pml.NTXentLoss(temperature=0.07)
    # labels = images: G^R
    ours = GlobalContrastiveLoss("random", temperature=0.07)(z, labels)
    np.testing.assert_allclose(float(ours), float(theirs(z, labels)), rtol=1e-6)
    # labels = partitions: G^D, image ids not needed
    ours = GlobalContrastiveLoss(temperature=0.07)(z, partition_ids=partitions)
    np.testing.assert_allclose(float(ours), float(theirs(z, partitions)), rtol=1e-6)
    # G^{D-}: pml with the pairs as an indices tuple
    pos, neg = global_pairing(labels, partitions, strategy="domain_negatives")
    a1, p = torch.nonzero(pos, as_tuple=True)
    a2, n = torch.nonzero(neg, as_tuple=True)
    ours = GlobalContrastiveLoss("domain_negatives", temperature=0.07)(z, labels, partitions)
    np.testing.assert_allclose(float(ours), float(theirs(z, indices_tuple=(a1, p, a2, n))),
                               rtol=1e-6)
    # two views per label: SupCon is NT-Xent
    ours = global_contrastive_loss(z[:8], z[8:], strategy="random", temperature=0.1)
    np.testing.assert_allclose(float(ours), float(pml.SupConLoss()(z, labels)), rtol=1e-6)
