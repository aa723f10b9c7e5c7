#!/usr/bin/python3
"""Float32 error of Winograd tiles against float64 direct convolution, with
float32 direct convolution for scale (numpy only): F(2x2, 3x3), the F(4x2, 3x3)
that Norma uses (layers/fast/winograd.h; F(4, 3) down the columns on the points
0, -1, 1, -1/2, 2, F(2, 3) along the rows), F(4x4, 3x3) on those points (which
it takes only where NORMA_WINOGRAD_F44 asks) and on Lavin & Gray's (0, 1, -1,
2, -2). Random inputs, 16x16 outputs, weights scaled by 1/sqrt(9C), then all
randn. Besides the largest error it prints the largest ratio of the error to
the golden tests' tolerance (1e-5 + 1e-4 |y|): above 1 would fail them.
docs/performance.md quotes its output.

  /usr/bin/python3 scripts/winograd_error.py
"""
import numpy as np

F = np.float32
F2 = (F([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),  # (B^T, G, A^T) of F(2, 3)
      np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
      F([[1, 1, 1, 0], [0, 1, -1, -1]]))
F4 = (F([[2, 3, -4, -3, 2, 0], [0, 2, 1, -5, 2, 0], [0, -2, -5, -1, 2, 0], [0, 2, -1, -2, 1, 0],  # layers/fast/winograd.h's
         [0, -1, -2, 1, 2, 0], [0, 2, 3, -4, -3, 2]]),
      np.array([[1 / 2, 0, 0], [1 / 6, -1 / 6, 1 / 6], [-1 / 6, -1 / 6, -1 / 6], [-16 / 15, 8 / 15, -4 / 15],
                [1 / 30, 1 / 15, 2 / 15], [0, 0, 1 / 2]]),
      F([[1, 1, 1, 1, 1, 0], [0, -1, 1, -.5, 2, 0], [0, 1, 1, .25, 4, 0], [0, -1, 1, -.125, 8, 1]]))
F4_LAVIN = (F([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
            np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                      [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
            F([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]))


def winograd(x, w, rows, cols):  # x (C, H, W), w (K, C, 3, 3): valid correlation; H-2, W-2 multiples of the tile
    (BTr, Gr, ATr), (BTc, Gc, ATc) = rows, cols
    mr, mc = ATr.shape[0], ATc.shape[0]
    U = np.einsum('ij,kcjl,ml->kcim', Gr, w.astype(np.float64), Gc).astype(F)  # in double, as the C++ does
    y = np.zeros((w.shape[0], x.shape[1] - 2, x.shape[2] - 2), F)
    for ty in range(y.shape[1] // mr):
        for tx in range(y.shape[2] // mc):
            d = x[:, ty * mr:ty * mr + mr + 2, tx * mc:tx * mc + mc + 2]
            V = np.einsum('ij,cjl,ml->cim', BTr, d, BTc).astype(F)
            M = np.einsum('kcim,cim->kim', U, V).astype(F)
            y[:, ty * mr:ty * mr + mr, tx * mc:tx * mc + mc] = np.einsum('ij,kjl,ml->kim', ATr, M, ATc)
    return y


def direct(x, w, dtype):
    H, W = x.shape[1] - 2, x.shape[2] - 2
    return sum(np.einsum('kc,chw->khw', w[:, :, i, j].astype(dtype), x[:, i:i + H, j:j + W].astype(dtype))
               for i in range(3) for j in range(3))


rng = np.random.default_rng(0)
# Weights at PyTorch's initial scale, 1/sqrt(9C), as in a network; then all
# randn, as the golden fixtures are made (scripts/gen_conv_bn_fixtures.py),
# where |y| grows as sqrt(9C) and the tolerance's 1e-5 absolute term is tighter.
for scaled in (True, False):
    print("weights randn / sqrt(9C)" if scaled else "weights randn (as the golden fixtures)")
    for C in (16, 32, 64, 128, 256) if not scaled else (32, 64, 128, 256):
        x = rng.standard_normal((C, 18, 18)).astype(F)
        w = rng.standard_normal((C, C, 3, 3))
        w = (w / np.sqrt(9 * C) if scaled else w).astype(F)
        ref = direct(x, w, np.float64)
        print(f"{C} channels, |y| up to {np.abs(ref).max():.2f}: largest error, largest error / tolerance")
        for name, y in (("F(2x2, 3x3)", winograd(x, w, F2, F2)), ("F(4x2, 3x3)", winograd(x, w, F4, F2)),
                        ("F(4x4, 3x3)", winograd(x, w, F4, F4)),
                        ("F(4x4) Lavin", winograd(x, w, F4_LAVIN, F4_LAVIN)), ("direct float32", direct(x, w, F))):
            err = np.abs(y - ref)
            print(f"  {name:15s} {err.max():.2e}  {np.max(err / (1e-5 + 1e-4 * np.abs(ref))):.2f}")
