"""Independent oracles for the models tests, written from REFERENCE.md §3 and the equations.

Nothing here imports contrastlocal.
"""

from __future__ import annotations

import numpy as np

# (name, kernel, in_channels, out_channels, bias, batch_norm): REFERENCE.md §3.2, in order.
Layer = tuple[str, int, int, int, bool, bool]


def reference_unet_layers(num_classes: int, in_channels: int = 1) -> list[Layer]:
    """The original `seg_unet` layer list (encoder, decoder blocks, segmentation head)."""
    encoder = [
        ("enc_c1_a", 3, in_channels, 16, True, True),
        ("enc_c1_b", 3, 16, 16, True, True),
        ("enc_c2_a", 3, 16, 32, True, True),
        ("enc_c2_b", 3, 32, 32, True, True),
        ("enc_c3_a", 3, 32, 64, True, True),
        ("enc_c3_b", 3, 64, 64, True, True),
        ("enc_c4_a", 3, 64, 128, True, True),
        ("enc_c4_b", 3, 128, 128, True, True),
        ("enc_c5_a", 3, 128, 128, True, True),
        ("enc_c5_b", 3, 128, 128, True, True),
        ("enc_c6_a", 3, 128, 128, True, True),
        ("enc_c6_b", 3, 128, 128, True, True),
    ]
    decoder = [
        # block 1: upsample conv 2x2, concat enc_c5_b (128) -> 256 in
        ("dec_dc6", 2, 128, 128, True, True),
        ("dec_c5_a", 3, 256, 128, True, True),
        ("dec_c5_b", 3, 128, 128, True, True),
        # block 2
        ("dec_dc5", 2, 128, 128, True, True),
        ("dec_c4_a", 3, 256, 128, True, True),
        ("dec_c4_b", 3, 128, 128, True, True),
        # block 3
        ("dec_dc4", 2, 128, 64, True, True),
        ("dec_c3_a", 3, 128, 64, True, True),
        ("dec_c3_b", 3, 64, 64, True, True),
        # block 4
        ("dec_dc3", 2, 64, 32, True, True),
        ("dec_c2_a", 3, 64, 32, True, True),
        ("dec_c2_b", 3, 32, 32, True, True),
        # block 5 (one 3x3 conv)
        ("dec_dc2", 2, 32, 16, True, True),
        ("dec_c1_a", 3, 32, 16, True, True),
    ]
    head = [
        ("seg_c1_a", 3, 16, 16, True, True),
        ("seg_c1_b", 3, 16, 16, True, True),
        ("seg_fin_layer", 3, 16, num_classes, False, False),
    ]
    return encoder + decoder + head


def count_conv_parameters(layers: list[Layer], *, spatial_dims: int = 2) -> int:
    """Trainable parameters: kernel k^d*Cin*Cout, bias Cout, BN gamma and beta 2*Cout."""
    total = 0
    for _, k, cin, cout, bias, bn in layers:
        total += k**spatial_dims * cin * cout
        total += cout if bias else 0
        total += 2 * cout if bn else 0
    return total


def tf_same_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Loop-based TensorFlow 'SAME' conv (stride 1): pad (k-1)//2 before, the rest after.

    x: (C_in, H, W), w: (C_out, C_in, k, k), b: (C_out,) -> (C_out, H, W).
    """
    c_out, c_in, k, _ = w.shape
    _, h, wd = x.shape
    before = (k - 1) // 2
    after = k - 1 - before
    padded = np.zeros((c_in, h + before + after, wd + before + after), dtype=np.float64)
    padded[:, before : before + h, before : before + wd] = x
    out = np.zeros((c_out, h, wd), dtype=np.float64)
    for o in range(c_out):
        for i in range(h):
            for j in range(wd):
                acc = b[o]
                for c in range(c_in):
                    for a in range(k):
                        for d in range(k):
                            acc += w[o, c, a, d] * padded[c, i + a, j + d]
                out[o, i, j] = acc
    return out


def local_head_train_mode(
    x: np.ndarray, w1: np.ndarray, gamma: np.ndarray, beta: np.ndarray, w2: np.ndarray, eps: float
) -> np.ndarray:
    """g_2 in training mode: 1x1 conv, batch norm with batch statistics, ReLU, 1x1 conv.

    x: (N, C, H, W); w1: (C1, C); w2: (C2, C1).
    """
    n, c, h, wd = x.shape
    y = np.zeros((n, w1.shape[0], h, wd))
    for o in range(w1.shape[0]):
        for i in range(c):
            y[:, o] += w1[o, i] * x[:, i]
    mean = y.mean(axis=(0, 2, 3), keepdims=True)
    var = ((y - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    y = (y - mean) / np.sqrt(var + eps) * gamma[None, :, None, None] + beta[None, :, None, None]
    y = np.maximum(y, 0.0)
    z = np.zeros((n, w2.shape[0], h, wd))
    for o in range(w2.shape[0]):
        for i in range(w2.shape[1]):
            z[:, o] += w2[o, i] * y[:, i]
    return z
