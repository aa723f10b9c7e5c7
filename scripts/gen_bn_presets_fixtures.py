#!/usr/bin/python3
"""Reference values for Norma's BatchNorm2d presets (issue 4).

PyTorch (torch.nn.BatchNorm2d) is the reference for the pytorch, r_torch and
megengine presets (MegEngine's decay d becomes PyTorch's momentum 1 - d, its
freeze is eval mode with gamma and beta frozen). BrainPy, numpy-ml and PuzzleLib
have no PyTorch spelling, so each gets a small NumPy class below that mirrors
that framework's source, computing in float64; a NumPy MegEngine is checked
against the PyTorch one here, as a test of the method.

Every case runs 12 training steps (PuzzleLib's p_t = max(1/t, 0.1) switches at
t = 10) then one eval step, on shared inputs and upstream gradients of shape
(3, 2, 2, 2) (read as NCHW or NHWC, C = 2 either way), recording the output,
dx, dgamma, dbeta and the running statistics after each step. null marks what
a case does not have (no affine, no running statistics, numpy-ml's missing
backward in eval and when frozen).
Writes tests/fixtures/bn_presets.json.   Run: /usr/bin/python3 scripts/gen_bn_presets_fixtures.py
"""
import json
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "bn_presets.json")
SHAPE = (3, 2, 2, 2)
C = 2
STEPS = 12
EPS = 1e-5


# ---------------------------------------------------------------- NumPy references (float64)

class MegEngineBN:
    """megengine.module.BatchNorm2d: NCHW, running = momentum*running + (1-momentum)*stat,
    unbiased running_var; freeze: running statistics, no update, no gamma/beta gradient."""

    def __init__(self, gamma, beta, rm, rv, momentum=0.9, freeze=False):
        self.gamma, self.beta, self.rm, self.rv = gamma, beta, rm, rv
        self.momentum, self.freeze = momentum, freeze

    def forward(self, x, training):
        axes = (0, 2, 3)
        m = x.size // x.shape[1]
        if training and not self.freeze:
            mean, var = x.mean(axes), x.var(axes)
            self.rm = self.momentum * self.rm + (1 - self.momentum) * mean
            self.rv = self.momentum * self.rv + (1 - self.momentum) * var * m / (m - 1)
            self.batch = True
        else:
            mean, var = self.rm, self.rv
            self.batch = False
        b = lambda v: v.reshape(1, -1, 1, 1)
        self.x, self.mean, self.invstd = x, b(mean), b(1 / np.sqrt(var + EPS))
        return (x - self.mean) * self.invstd * b(self.gamma) + b(self.beta)

    def backward(self, dy):
        axes, m = (0, 2, 3), dy.size // dy.shape[1]
        b = lambda v: v.reshape(1, -1, 1, 1)
        xhat = (self.x - self.mean) * self.invstd
        dbeta, dgamma = dy.sum(axes), (dy * xhat).sum(axes)
        k = self.invstd * b(self.gamma)
        if self.batch:
            dx = k * (dy - b(dbeta) / m - xhat * b(dgamma) / m)
        else:
            dx = dy * k
        return dx, (None, None) if self.freeze else (dgamma, dbeta)


class BrainPyBN:
    """brainpy.dnn.BatchNorm2d: NHWC, axis (0, 1, 2), one-pass variance
    max(0, E[x^2] - E[x]^2), running = momentum*running + (1-momentum)*var with
    var biased (<= 2.7.8) or unbiased (2.8). Gradients as JAX differentiates
    that forward (chain rule through E[x] and E[x^2])."""

    def __init__(self, gamma, beta, rm, rv, momentum=0.99, unbiased=False):
        self.gamma, self.beta, self.rm, self.rv = gamma, beta, rm, rv
        self.momentum, self.unbiased = momentum, unbiased

    def forward(self, x, fit):
        axes, m = (0, 1, 2), x.size // x.shape[3]
        self.fit, self.x, self.m = fit, x, m
        if fit:
            mean = x.mean(axes)
            mean_sq = (x * x).mean(axes)
            self.raw_var = mean_sq - mean * mean
            var = np.maximum(0.0, self.raw_var)
            run_var = var * m / (m - 1) if self.unbiased else var
            self.rm = self.momentum * self.rm + (1 - self.momentum) * mean
            self.rv = self.momentum * self.rv + (1 - self.momentum) * run_var
        else:
            mean, var = self.rm, self.rv
        self.mean, self.var = mean, var
        mul = 1 / np.sqrt(var + EPS) * self.gamma
        return (x - mean) * mul + self.beta

    def backward(self, dy):
        axes, m, x, mean = (0, 1, 2), self.m, self.x, self.mean
        r = 1 / np.sqrt(self.var + EPS)
        dbeta = dy.sum(axes)
        dgamma = (dy * (x - mean) * r).sum(axes)
        dxc = dy * r * self.gamma  # through y = (x - mean) * r * gamma
        if not self.fit:
            return dxc, (dgamma, dbeta)
        dr = (dy * (x - mean) * self.gamma).sum(axes)
        dvar = dr * -0.5 * (self.var + EPS) ** -1.5 * (self.raw_var > 0)
        dmean = -dxc.sum(axes) + dvar * -2 * mean  # var = E[x^2] - mean^2
        dmean_sq = dvar
        dx = dxc + dmean / m + dmean_sq * 2 * x / m
        return dx, (dgamma, dbeta)


class NumpyMlBN:
    """numpy_ml.neural_nets.layers.BatchNorm2D: NHWC, running = momentum*running +
    (1-momentum)*stat with X.var (biased); a frozen layer (trainable=False)
    uses the running statistics and has no backward; backward is its _bwd."""

    def __init__(self, gamma, beta, rm, rv, momentum=0.9, trainable=True):
        self.scaler, self.intercept, self.rm, self.rv = gamma, beta, rm, rv
        self.momentum, self.trainable = momentum, trainable

    def forward(self, X, retain_derived=True):
        X_mean, X_var = self.rm, self.rv
        if self.trainable and retain_derived:
            X_mean, X_var = X.mean(axis=(0, 1, 2)), X.var(axis=(0, 1, 2))
            self.rm = self.momentum * self.rm + (1.0 - self.momentum) * X_mean
            self.rv = self.momentum * self.rv + (1.0 - self.momentum) * X_var
        self.X = X if retain_derived else None
        N = (X - X_mean) / np.sqrt(X_var + EPS)
        return self.scaler * N + self.intercept

    def backward(self, dLdy):
        if not self.trainable or self.X is None:
            return None, (None, None)  # "Layer is frozen" / nothing retained
        X = self.X.reshape(-1, self.X.shape[3])
        dLdy2 = dLdy.reshape(-1, dLdy.shape[3])
        n_ex = X.shape[0]
        X_mean, X_var = X.mean(axis=0), X.var(axis=0)
        N = (X - X_mean) / np.sqrt(X_var + EPS)
        dIntercept = dLdy2.sum(axis=0)
        dScaler = np.sum(dLdy2 * N, axis=0)
        dN = dLdy2 * self.scaler
        dX = (n_ex * dN - dN.sum(axis=0) - N * (N * dN).sum(axis=0)) / (n_ex * np.sqrt(X_var + EPS))
        return dX.reshape(self.X.shape), (dScaler, dIntercept)


class PuzzleLibBN:
    """PuzzleLib BatchNorm2D: NCHW; at the t-th training forward
    p = max(initFactor / t, minFactor), running = (1-p)*running + p*stat with the
    unbiased variance (cuDNN); backward the staged chain rule (cuDNN's formula)."""

    def __init__(self, gamma, beta, rm, rv, initFactor=1.0, minFactor=0.1):
        self.scale, self.bias, self.mean, self.var = gamma, beta, rm, rv
        self.initFactor, self.minFactor, self.t = initFactor, minFactor, 0

    def forward(self, data, train):
        axes, m = (0, 2, 3), data.size // data.shape[1]
        b = lambda v: v.reshape(1, -1, 1, 1)
        self.train, self.x, self.m = train, data, m
        if train:
            self.t += 1
            factor = max(self.initFactor / self.t, self.minFactor)
            mu, var = data.mean(axes), data.var(axes)
            self.mean = (1 - factor) * self.mean + factor * mu
            self.var = (1 - factor) * self.var + factor * var * m / (m - 1)
        else:
            mu, var = self.mean, self.var
        self.mu, self.ivar = b(mu), b(1 / np.sqrt(var + EPS))
        return (data - self.mu) * self.ivar * b(self.scale) + b(self.bias)

    def backward(self, grad):
        axes, m = (0, 2, 3), self.m
        b = lambda v: v.reshape(1, -1, 1, 1)
        xmu = self.x - self.mu
        dbias, dscale = grad.sum(axes), (grad * xmu * self.ivar).sum(axes)
        dxhat = grad * b(self.scale)
        if not self.train:
            return dxhat * self.ivar, (dscale, dbias)
        dvar = b((dxhat * xmu).sum(axes)) * -0.5 * self.ivar ** 3
        dmu = b(-(dxhat * self.ivar).sum(axes)) + dvar * b((-2 * xmu).mean(axes))
        dx = dxhat * self.ivar + dvar * 2 * xmu / m + dmu / m
        return dx, (dscale, dbias)


# ---------------------------------------------------------------- cases

def enc(a):
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float32).ravel()
    return [float(repr(v)) for v in a]  # shortest float32 repr: small JSON, exact float32 on reading


def torch_case(inputs, grads, init, momentum, affine=True, track=True, freeze=False):
    """momentum is PyTorch's p (None: cumulative). freeze: MegEngine's, i.e. eval
    mode with gamma and beta frozen."""
    bn = torch.nn.BatchNorm2d(C, eps=EPS, momentum=momentum, affine=affine, track_running_stats=track).double()
    with torch.no_grad():
        if affine:
            bn.weight.copy_(torch.tensor(init["weight"]))
            bn.bias.copy_(torch.tensor(init["bias"]))
            bn.weight.requires_grad_(not freeze)
            bn.bias.requires_grad_(not freeze)
        if track:
            bn.running_mean.copy_(torch.tensor(init["running_mean"]))
            bn.running_var.copy_(torch.tensor(init["running_var"]))
    records = []
    for i, (x, g) in enumerate(zip(inputs, grads)):
        bn.train(i < STEPS and not freeze)
        xt = torch.tensor(x, requires_grad=True)
        if affine and not freeze:
            bn.weight.grad = bn.bias.grad = None
        y = bn(xt)
        y.backward(torch.tensor(g))
        rec = {"output": enc(y.detach().numpy()), "grad_input": enc(xt.grad.numpy()),
               "grad_weight": enc(bn.weight.grad.numpy()) if affine and not freeze else None,
               "grad_bias": enc(bn.bias.grad.numpy()) if affine and not freeze else None,
               "running_mean": enc(bn.running_mean.numpy()) if track else None,
               "running_var": enc(bn.running_var.numpy()) if track else None,
               "num_batches_tracked": int(bn.num_batches_tracked) if track else None}
        records.append(rec)
    return records


def numpy_case(make, inputs, grads, init, layout, affine=True, train_flag=lambda i: i < STEPS, **kw):
    gamma = np.array(init["weight"]) if affine else np.ones(C)
    beta = np.array(init["bias"]) if affine else np.zeros(C)
    ref = make(gamma, beta, np.array(init["running_mean"]), np.array(init["running_var"]), **kw)
    records, t = [], 0
    for i, (x, g) in enumerate(zip(inputs, grads)):
        train = train_flag(i)
        y = ref.forward(x, train)
        dx, (dgamma, dbeta) = ref.backward(g)
        if train and getattr(ref, "trainable", True) and not getattr(ref, "freeze", False):
            t += 1
        rm, rv = (ref.mean, ref.var) if isinstance(ref, PuzzleLibBN) else (ref.rm, ref.rv)
        records.append({"output": enc(y), "grad_input": enc(dx),
                        "grad_weight": enc(dgamma) if affine else None, "grad_bias": enc(dbeta) if affine else None,
                        "running_mean": enc(rm), "running_var": enc(rv), "num_batches_tracked": t})
    return records


def max_rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (1e-6 + np.abs(b))))


def main():
    torch.manual_seed(4)
    rng = np.random.default_rng(4)
    # Inputs drift from step to step (mean and scale), so the running averages move.
    inputs = [(torch.randn(*SHAPE, dtype=torch.float32) * (1.5 + 0.1 * t) + (0.3 * t - 1)).double().numpy()
              for t in range(STEPS + 1)]
    grads = [torch.randn(*SHAPE, dtype=torch.float32).double().numpy() for _ in range(STEPS + 1)]
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)
    fresh = {"running_mean": [0.0] * C, "running_var": [1.0] * C}
    warm = {"running_mean": f32(rng.normal(0, 0.5, C)).tolist(), "running_var": f32(0.5 + rng.random(C)).tolist()}

    def init(kind, stats=fresh):
        if kind == "numpy_ml":  # scaler uniform[0, 1), intercept zeros
            w, b = rng.random(C), np.zeros(C)
        elif kind == "puzzlelib":  # scale normal(1, sscale = 0.01), bias zeros
            w, b = rng.normal(1.0, 0.01, C), np.zeros(C)
        else:  # ones and zeros by default; perturbed so gamma and beta matter
            w, b = 1 + 0.2 * rng.standard_normal(C), 0.2 * rng.standard_normal(C)
        return {"weight": f32(w).tolist(), "bias": f32(b).tolist(), **stats}

    nchw, nhwc = "NCHW", "NHWC"
    cases = {}

    def add(name, preset, cfg, ini, records):
        cases[name] = {"preset": preset, "config": cfg, "init": {k: enc(v) for k, v in ini.items()},
                       "steps": records[:STEPS], "eval": records[STEPS]}

    def cfg(affine=True, track=True, freeze=False, momentum="default"):
        return {"affine": affine, "track_running_stats": track, "freeze": freeze, "momentum": momentum}

    # PyTorch and R torch (the same layer): torch.nn.BatchNorm2d itself.
    for preset in ("pytorch", "r_torch"):
        ini = init("pytorch")
        add(f"{preset}_default", preset, cfg(), ini, torch_case(inputs, grads, ini, 0.1))
    ini = init("pytorch")
    add("pytorch_momentum_none", "pytorch", cfg(momentum=None), ini, torch_case(inputs, grads, ini, None))
    ini = init("pytorch")
    add("pytorch_affine_off", "pytorch", cfg(affine=False), ini, torch_case(inputs, grads, ini, 0.1, affine=False))
    ini = init("pytorch")
    add("pytorch_no_running_stats", "pytorch", cfg(track=False), ini, torch_case(inputs, grads, ini, 0.1, track=False))

    # MegEngine: PyTorch with momentum 1 - 0.9, checked against the NumPy MegEngine.
    for name, c, ini in [("megengine_default", cfg(), init("megengine")),
                         ("megengine_affine_off", cfg(affine=False), init("megengine")),
                         ("megengine_freeze", cfg(freeze=True), init("megengine", warm)),
                         ("megengine_no_running_stats", cfg(track=False), init("megengine"))]:
        recs = torch_case(inputs, grads, ini, 1 - 0.9, affine=c["affine"], track=c["track_running_stats"],
                          freeze=c["freeze"])
        if c["track_running_stats"]:
            ref = numpy_case(MegEngineBN, inputs, grads, ini, nchw, affine=c["affine"], momentum=0.9,
                             freeze=c["freeze"])
            for a, b in zip(recs, ref):
                for k in ("output", "grad_input", "running_mean", "running_var"):
                    assert max_rel(a[k], b[k]) < 1e-5, (name, k, max_rel(a[k], b[k]))
        add(name, "megengine", c, ini, recs)

    # BrainPy 2.7.8 (biased running_var) and 2.8 (unbiased), NHWC.
    ini = init("brainpy")
    add("brainpy_default", "brainpy", cfg(), ini, numpy_case(BrainPyBN, inputs, grads, ini, nhwc))
    ini = init("brainpy")
    add("brainpy_affine_off", "brainpy", cfg(affine=False), ini,
        numpy_case(BrainPyBN, inputs, grads, ini, nhwc, affine=False))
    ini = init("brainpy")
    add("brainpy-2.8_default", "brainpy-2.8", cfg(), ini,
        numpy_case(BrainPyBN, inputs, grads, ini, nhwc, unbiased=True))

    # numpy-ml, NHWC; frozen: trainable=False in every step.
    ini = init("numpy_ml")
    add("numpy_ml_default", "numpy_ml", cfg(), ini, numpy_case(NumpyMlBN, inputs, grads, ini, nhwc))
    ini = init("numpy_ml", warm)
    add("numpy_ml_freeze", "numpy_ml", cfg(freeze=True), ini,
        numpy_case(NumpyMlBN, inputs, grads, ini, nhwc, trainable=False))

    # PuzzleLib, NCHW, p_t = max(1/t, 0.1).
    ini = init("puzzlelib")
    add("puzzlelib_default", "puzzlelib", cfg(), ini, numpy_case(PuzzleLibBN, inputs, grads, ini, nchw))
    ini = init("puzzlelib")
    add("puzzlelib_affine_off", "puzzlelib", cfg(affine=False), ini,
        numpy_case(PuzzleLibBN, inputs, grads, ini, nchw, affine=False))

    fixture = {"shape": list(SHAPE), "steps": STEPS, "inputs": [enc(x) for x in inputs],
               "grad_outputs": [enc(g) for g in grads], "cases": cases}
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
    os.replace(tmp, OUT)
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
