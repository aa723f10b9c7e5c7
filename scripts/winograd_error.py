#!/usr/bin/python3
"""Float32 error of Winograd F(2x2, 3x3) and F(4x4, 3x3) against float64 direct
convolution, with float32 direct convolution for scale (numpy only). Lavin &
Gray's transform matrices; random inputs, weights scaled by 1/sqrt(9C).
docs/performance.md quotes its output.

  /usr/bin/python3 scripts/winograd_error.py
"""
import numpy as np

F = np.float32
MATS = {  # m: (B^T, G, A^T) for F(m x m, 3 x 3)
    2: (F([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        F([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
        F([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (F([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
           [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        F([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
           [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        F([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])),
}


def winograd(x, w, m):  # x (C, H, W), w (K, C, 3, 3): valid correlation, H-2 and W-2 multiples of m
    BT, G, AT = MATS[m]
    U = np.einsum('ij,kcjl,ml->kcim', G, w, G).astype(F)
    y = np.zeros((w.shape[0], x.shape[1] - 2, x.shape[2] - 2), F)
    for ty in range(y.shape[1] // m):
        for tx in range(y.shape[2] // m):
            d = x[:, ty * m:ty * m + m + 2, tx * m:tx * m + m + 2]
            V = np.einsum('ij,cjl,ml->cim', BT, d, BT).astype(F)
            M = np.einsum('kcim,cim->kim', U, V).astype(F)
            y[:, ty * m:ty * m + m, tx * m:tx * m + m] = np.einsum('ij,kjl,ml->kim', AT, M, AT)
    return y


def direct(x, w, dtype):
    H, W = x.shape[1] - 2, x.shape[2] - 2
    return sum(np.einsum('kc,chw->khw', w[:, :, i, j].astype(dtype), x[:, i:i + H, j:j + W].astype(dtype))
               for i in range(3) for j in range(3))


rng = np.random.default_rng(0)
for C in (32, 64):
    x = rng.standard_normal((C, 18, 18)).astype(F)
    w = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(F)
    ref = direct(x, w, np.float64)
    print(f"{C} channels, |y| up to {np.abs(ref).max():.2f}: largest error")
    for m in (2, 4):
        print(f"  F({m}x{m}, 3x3)  {np.abs(winograd(x, w, m) - ref).max():.2e}")
    print(f"  direct float32 {np.abs(direct(x, w, F) - ref).max():.2e}")
