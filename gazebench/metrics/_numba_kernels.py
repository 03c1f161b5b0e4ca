"""The numba functions behind ``cpu_kernels`` (imported on first use: compiling costs seconds)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath={"contract"})
def ssim_means(x, y, affine, window, c1, c2_sum, c2_product, valid, out):  # pragma: no cover - compiled
    """SSIM of each map pair, see ``cpu_kernels.ssim_means``: horizontal then vertical 'valid'
    filtering of x, y, x^2 + y^2 + c2_sum and x y + c2_product in float32, image by image.

    (Products and sums may be fused into FMAs: rounding differences of ~1e-7.)
    """
    n, height, width = x.shape
    size = window.shape[0]
    out_height, out_width = height - size + 1, width - size + 1
    half_c1, full_c1 = np.float32(c1 / 2), np.float32(c1)
    for image in prange(n):
        if not valid[image]:
            out[image] = np.nan
            continue
        scale_x, shift_x, mean_x, scale_y, shift_y, mean_y = affine[image]
        across = np.empty((4, height, out_width), dtype=np.float32)  # the moments, filtered along rows
        row = np.empty((4, width), dtype=np.float32)
        for r in range(height):
            for c in range(width):
                xv = np.float32(scale_x * x[image, r, c] + shift_x)
                yv = np.float32(scale_y * y[image, r, c] + shift_y)
                row[0, c] = xv
                row[1, c] = yv
                row[2, c] = np.float32(c2_sum) + xv * xv + yv * yv
                row[3, c] = np.float32(c2_product) + xv * yv
            for m in range(4):
                _filter(row[m], 0, 1, window, across[m, r])
        local = np.empty((4, out_width), dtype=np.float32)  # the moments' local means on one output row
        total = np.zeros(out_width, dtype=np.float64)
        offset_x, offset_y = np.float32(mean_x), np.float32(mean_y)
        for r in range(out_height):
            for m in range(4):
                _filter(across[m].ravel(), r * out_width, out_width, window, local[m])
            for c in range(out_width):
                mx, my = local[0, c], local[1, c]
                covariance = local[3, c] - mx * my
                variance_sum = local[2, c] - mx * mx - my * my
                mx += offset_x
                my += offset_y
                total[c] += np.float64(((half_c1 + mx * my) * covariance) / ((full_c1 + mx * mx + my * my) * variance_sum))
        out[image] = 4 * total.sum() / (out_height * out_width)


@njit(inline="always", fastmath={"contract"})
def _filter(source, start, step, window, out):  # pragma: no cover - compiled
    """out[c] = sum_k window[k] source[start + c + k step] for every c of ``out`` ('valid' filtering).

    Along a line (``step`` 1) or down the columns of a flattened plane (``step`` its width).  The
    default windows (11 taps: the Gaussian of sigma 1.5; 7: skimage's box) are unrolled, so that
    each output is one expression the compiler vectorises; other sizes loop over the taps.
    """
    size = window.shape[0]
    if size == 11:
        w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10 = (
            window[0], window[1], window[2], window[3], window[4], window[5],
            window[6], window[7], window[8], window[9], window[10]
        )
        for c in range(out.shape[0]):
            at = start + c
            out[c] = (
                w0 * source[at] + w1 * source[at + 1 * step] + w2 * source[at + 2 * step] + w3 * source[at + 3 * step]
                + w4 * source[at + 4 * step] + w5 * source[at + 5 * step] + w6 * source[at + 6 * step] + w7 * source[at + 7 * step]
                + w8 * source[at + 8 * step] + w9 * source[at + 9 * step] + w10 * source[at + 10 * step]
            )
    elif size == 7:
        w0, w1, w2, w3, w4, w5, w6 = window[0], window[1], window[2], window[3], window[4], window[5], window[6]
        for c in range(out.shape[0]):
            at = start + c
            out[c] = (
                w0 * source[at] + w1 * source[at + 1 * step] + w2 * source[at + 2 * step] + w3 * source[at + 3 * step]
                + w4 * source[at + 4 * step] + w5 * source[at + 5 * step] + w6 * source[at + 6 * step]
            )
    else:
        out[:] = 0
        for k in range(size):
            for c in range(out.shape[0]):
                out[c] += window[k] * source[start + c + k * step]


@njit(parallel=True, cache=True)
def code_histograms(saliency, low, boost, scale, values, negatives, valid, bins, counts, weights):  # pragma: no cover - compiled
    """Per row of saliency [B, P], the pixel count (and negatives weight, when ``negatives`` has
    rows) of each code 2 j + tie, j = #{positive values <= s}; see ``cpu_kernels.code_histograms``.

    Each row's code table is indexed by value bin: a bin without positive values gives its code
    directly, a bin with some (-1) is resolved against them.
    """
    n, n_pixels = saliency.shape
    weighted = negatives.shape[0] > 0
    for image in prange(n):
        if not valid[image]:
            continue
        lowest, row_boost, row_scale = low[image], boost[image], scale[image]
        in_bin = np.zeros(bins, dtype=np.int64)
        n_values = 0
        while n_values < values.shape[1] and math.isfinite(values[image, n_values]):
            in_bin[_bin(values[image, n_values], lowest, row_boost, row_scale, bins)] += 1
            n_values += 1
        below = np.zeros(bins, dtype=np.int64)  # positive values in lower bins
        bin_code = np.empty(bins, dtype=np.int64)
        for b in range(bins):
            if b > 0:
                below[b] = below[b - 1] + in_bin[b - 1]
            bin_code[b] = 2 * below[b] if in_bin[b] == 0 else -1
        for p in range(n_pixels):
            s = np.float64(saliency[image, p])
            b = _bin(s, lowest, row_boost, row_scale, bins)
            code = bin_code[b]
            if code < 0:
                j = below[b]
                end = j + in_bin[b]
                while j < end and values[image, j] <= s:
                    j += 1
                code = 2 * j + (1 if j > below[b] and values[image, j - 1] == s else 0)
            counts[image, code] += 1
            if weighted:
                weights[image, code] += negatives[image, p]


@njit(inline="always")
def _bin(s, lowest, boost, scale, bins):  # pragma: no cover - compiled
    """0 for the minimum, else ceil((s - min) boost scale) in [1, bins - 1]: monotone, equal values share a bin."""
    b = min(int(math.ceil((s - lowest) * boost * scale)), bins - 1)
    return max(b, 1) if s > lowest else 0


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def shifted_l1_distances(x, y, x_low, y_low, ratio, out):  # pragma: no cover - compiled
    """out[i] = sum_p |(x[i, p] - x_low[i]) - (y[i, p] - y_low[i]) ratio[i]|; x may be one row for all.

    (The sum may be reassociated, so that it vectorises.)
    """
    n, n_pixels = y.shape
    step = 0 if x.shape[0] == 1 else 1  # row i of x is row i * step
    for i in prange(n):
        row = i * step
        a, b = x_low[i], y_low[i]
        r = ratio[i]
        total = 0.0
        for p in range(n_pixels):
            total += abs((x[row, p] - a) - (y[i, p] - b) * r)
        out[i] = total
