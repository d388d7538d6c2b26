"""Loop references of the authors'-fidelity building blocks, transcribed from REFERENCE.md.

Batches: REFERENCE.md §0 (partition sampler), §1.1-1.3 and §4.1 (global batches: the stitching
loop of G^D, the [originals | view 1 | view 2] rows of G^{D-}, interleaved G^R rows), §2.4-2.5
and §4.2 (stage-2 batches). Augmentation: §4.1 (the correlated intensity draw, the 100-pixel
crop), §4.3 (affine step, then a bilinear warp of image and one-hot label on the tail n0..N-1).
Each function draws its random numbers one at a time, in the order the implementation
documents, from a generator seeded like the implementation's.
"""

from __future__ import annotations

import math

import numpy as np

from tests._reference_augment import intensity_reference, warp_reference


def partition_slices_reference(depths, volumes, num_partitions, rng):
    """§0: chunks [k⌊Z/S⌋, (k+1)⌊Z/S⌋), one slice uniformly from each (one U(0,1) per slice)."""
    out = []
    for v in volumes:
        chunk = depths[v] // num_partitions
        row = []
        for k in range(num_partitions):
            u = rng.random()
            row.append(k * chunk + math.floor(u * chunk))
        out.append(row)
    return out


def _row(volume, slice_, partition, image, view, set_=0, blank=False, call=None):
    """One row; ``call``: the augmentation call (§4.1: one per view, G^D one per set)."""
    if call is None:
        call = view - 1 if view > 0 else -1
    return {"volume": volume, "slice": slice_, "partition": partition, "image": image,
            "view": view, "set": set_, "call": call, "blank": blank}


def random_batch_reference(batch_size, depths, rng):
    """§1.1 / §2.4: B slices uniformly with replacement from all slices; rows 2i, 2i+1."""
    total = sum(depths)
    rows = []
    for i in range(batch_size):
        flat = math.floor(rng.random() * total)
        volume = 0
        while flat >= depths[volume]:
            flat -= depths[volume]
            volume += 1
        rows.append(_row(volume, flat, -1, i, 1))
        rows.append(_row(volume, flat, -1, i, 2))
    return rows


def domain_negatives_batch_reference(batch_size, num_partitions, depths, rng):
    """§1.2: image k = volume ⌊k/S⌋ (random order), partition k mod S; rows [x | t1(x) | t2(x)]."""
    order = rng.permutation(len(depths))
    used = -(-batch_size // num_partitions)
    slices = partition_slices_reference(depths, order[:used], num_partitions, rng)
    images = []
    for k in range(batch_size):
        v, p = k // num_partitions, k % num_partitions
        images.append((int(order[v]), slices[v][p], p, k))
    rows = []
    for view in range(3):
        for volume, slice_, p, k in images:
            rows.append(_row(volume, slice_, p, k, view))
    return rows


def domain_batch_reference(batch_size, num_partitions, depths, rng, blank_rows=True):
    """§1.3: the stitching loop of blocks of 4S rows, stopping at ``i + 4S >= max_bz``.

    ``max_bz`` = 4B for S = 4, 5B + 4 otherwise; rows never written stay blank. With
    ``blank_rows=False`` the loop runs on until every row is written (the last block cut).
    """
    s = num_partitions
    max_bz = 4 * batch_size if s == 4 else 5 * batch_size + 4
    blocks = 0
    i = 0
    while True:
        if blank_rows and i + 4 * s >= max_bz:
            break
        if not blank_rows and i >= max_bz:
            break
        blocks += 1
        i += 4 * s
    order0 = rng.permutation(len(depths))[:blocks]
    order1 = rng.permutation(len(depths))[:blocks]
    slices0 = partition_slices_reference(depths, order0, s, rng)
    slices1 = partition_slices_reference(depths, order1, s, rng)
    rows = [_row(-1, -1, -1, -1, -1, -1, True, -1) for _ in range(max_bz)]
    i = 0
    for b in range(blocks):
        for set_, order, slices in ((0, order0, slices0), (1, order1, slices1)):
            for view in (0, 1):  # the slices themselves, then their augmentations
                for p in range(s):
                    if i < max_bz:
                        image = (2 * b + set_) * s + p
                        call = set_ if view == 1 else -1  # each set's slices: one call
                        rows[i] = _row(int(order[b]), slices[b][p], p, image, view, set_,
                                       call=call)
                    i += 1
    return rows


def local_domain_batch_reference(depths, rng):
    """§2.5: 3 volumes x 4 partitions, slice k = volume ⌊k/4⌋, partition k mod 4; two views
    concatenated (rows 0-11 view 1, rows 12-23 view 2)."""
    order = rng.permutation(len(depths))[:3]
    slices = partition_slices_reference(depths, order, 4, rng)
    rows = []
    for view in (1, 2):
        for k in range(12):
            v, p = k // 4, k % 4
            rows.append(_row(int(order[v]), slices[v][p], p, k, view))
    return rows


def shared_intensity_reference(images, u, brightness, contrast, clip=(0.0, 1.5)):
    """§4.1: one u per call, δ = -b + 2bu, c = 1 - k + 2ku (c = 1 + δ for b = k = 0.3)."""
    shift = -brightness + 2 * brightness * u
    factor = 1 - contrast + 2 * contrast * u
    return np.stack([intensity_reference(img, shift, factor, clip) for img in images])


def fixed_crop_reference(image, corner_px, crop_px, shift, factor, clip=(0.0, 1.5)):
    """§4.1 / §6.16: the box [x0, x0 + 100) x [y0, y0 + 100) at an integer corner, cut at the
    image border (slicing past the end), resized bilinearly to the full size, then intensity."""
    _, h, w = image.shape
    x0, y0 = corner_px
    bw, bh = min(crop_px, w - x0), min(crop_px, h - y0)
    out = np.empty(image.shape, dtype=np.float64)
    for ch in range(image.shape[0]):
        for i in range(h):
            for j in range(w):
                u = min(max(x0 + (j + 0.5) * bw / w - 0.5, 0.0), w - 1)  # column
                v = min(max(y0 + (i + 0.5) * bh / h - 0.5, 0.0), h - 1)  # row
                c0, r0 = math.floor(u), math.floor(v)
                c1, r1 = min(c0 + 1, w - 1), min(r0 + 1, h - 1)
                a, b = u - c0, v - r0
                out[ch, i, j] = ((1 - b) * ((1 - a) * image[ch, r0, c0] + a * image[ch, r0, c1])
                                 + b * ((1 - a) * image[ch, r1, c0] + a * image[ch, r1, c1]))
    return intensity_reference(out, shift, factor, clip)


def authors_warp_reference(image, label, theta, displacement, num_classes):
    """§4.3: affine (image order 1, label order 0, zero outside), then, if the row's field is not
    zero, a bilinear warp with edge values outside of the image and of the one-hot label."""
    img = warp_reference(image, theta, order=1)
    lab = warp_reference(label[None].astype(np.float64), theta, order=0)[0]
    onehot = np.stack([(np.rint(lab) == k).astype(np.float64) for k in range(num_classes)])
    if displacement is None or not np.any(displacement):
        return img, onehot
    eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return (warp_reference(img, eye, displacement, order=1, mode="nearest"),
            warp_reference(onehot, eye, displacement, order=1, mode="nearest"))


_YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                 [0.211456, -0.522591, 0.311135]])


def colour_jitter_reference(image, fb, fc, fs, hue_turns, clip=(0.0, 1.0)):
    """Brightness x fb; contrast: blend with the image's mean grey by fc; saturation: blend with
    the pixel's grey by fs; hue: rotate (I, Q) of YIQ by 2π·hue_turns; then clip. Pixel loops."""
    x = image.astype(np.float64) * fb
    grey = lambda px: 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]  # noqa: E731
    _, h, w = x.shape
    mean = np.mean([grey(x[:, i, j]) for i in range(h) for j in range(w)])
    x = fc * x + (1 - fc) * mean
    out = np.empty_like(x)
    a = 2 * math.pi * hue_turns
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    m = np.linalg.inv(_YIQ) @ rot @ _YIQ
    for i in range(h):
        for j in range(w):
            px = x[:, i, j]
            px = fs * px + (1 - fs) * grey(px)
            out[:, i, j] = m @ px
    return out if clip is None else np.clip(out, *clip)
