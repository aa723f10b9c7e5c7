#!/usr/bin/env python3
"""Golden values for Norma's pooling ops and losses, computed by PyTorch (float32, CPU).

Run from the repository root with Debian's python3-torch:
    /usr/bin/python3 scripts/gen_layer_fixtures.py
It writes tests/fixtures/layers_golden.json (read by tests/layers_golden_test.cpp),
one case per line:
    "name": {"input": T, "target": T (losses), "grad_output": T, "output": T,
             "grad_input": T, "grad_target": T (mse only), "params": {"op": ..., ...}}
with T = {"shape": [...], "data": [...]} in row-major order. grad_output is the
fixed random upstream gradient; grad_* are the gradients it produces.
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "layers_golden.json")

gen = torch.Generator().manual_seed(20240601)


def randn(*shape):  # shape () gives a 0-d tensor
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def t2j(t):
    t = t.detach().to(torch.float32).contiguous()
    # 9 significant digits round-trip a float32 exactly.
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.flatten().tolist()]}


def pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


cases = {}


def run(name, fn, x, params, target=None, target_grad=False):
    x = x.clone().requires_grad_()
    t = None if target is None else target.clone().requires_grad_(target_grad)
    y = fn(x) if t is None else fn(x, t)
    dy = randn(*y.shape)
    y.backward(dy)
    case = {"input": t2j(x)}
    if t is not None:
        case["target"] = t2j(t)
    case.update({"grad_output": t2j(dy), "output": t2j(y), "grad_input": t2j(x.grad)})
    if target_grad:
        case["grad_target"] = t2j(t.grad)
    case["params"] = params
    cases[name] = case


# ---- pooling: (input shape, kernel, stride, padding)
pool_configs = [
    ((2, 3, 6, 6), 2, 2, 0),
    ((1, 2, 7, 5), 3, 1, 1),
    ((2, 2, 7, 7), 3, 2, 1),
    ((1, 1, 5, 4), 2, 1, 0),
    ((1, 2, 9, 7), 3, 2, 0),
    ((1, 2, 5, 5), 2, 2, 1),
    ((2, 1, 5, 6), (2, 3), (1, 2), (1, 0)),
]
for i, (shape, k, s, p) in enumerate(pool_configs):
    x = randn(*shape)
    params = {"kernel": pair(k), "stride": pair(s), "padding": pair(p)}
    run(f"max_pool2d_{i}", lambda x: F.max_pool2d(x, k, s, p), x, dict(op="max_pool2d", **params))
    run(f"avg_pool2d_{i}", lambda x: F.avg_pool2d(x, k, s, p), x,
        dict(op="avg_pool2d", count_include_pad=True, **params))
    if p != 0:
        run(f"avg_pool2d_{i}_exclude_pad", lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=False), x,
            dict(op="avg_pool2d", count_include_pad=False, **params))

for i, (shape, out) in enumerate([((2, 3, 5, 7), 1), ((1, 2, 7, 5), 1), ((2, 2, 7, 5), (3, 2)), ((1, 1, 4, 4), 3)]):
    run(f"adaptive_avg_pool2d_{i}", lambda x: F.adaptive_avg_pool2d(x, out), randn(*shape),
        {"op": "adaptive_avg_pool2d", "output_size": pair(out)})

# ---- losses. Class targets are stored as float, Norma's encoding.
N, C = 6, 5
for r in ["mean", "sum", "none"]:
    for eps in [0.0, 0.1]:
        logits, target = randn(N, C) * 2, torch.randint(0, C, (N,), generator=gen).float()
        run(f"cross_entropy_{r}_ls{eps}",
            lambda x, t: F.cross_entropy(x, t.long(), reduction=r, label_smoothing=eps), logits,
            {"op": "cross_entropy", "reduction": r, "label_smoothing": eps}, target=target)
    logits, target = randn(N, C), torch.randint(0, C, (N,), generator=gen).float()
    run(f"nll_loss_{r}", lambda x, t: F.nll_loss(x, t.long(), reduction=r), F.log_softmax(logits, 1),
        {"op": "nll_loss", "reduction": r}, target=target)
    run(f"mse_loss_{r}", lambda x, t: F.mse_loss(x, t, reduction=r), randn(3, 4),
        {"op": "mse_loss", "reduction": r}, target=randn(3, 4), target_grad=True)

# Logits in the thousands: a naive softmax overflows.
logits, target = randn(4, 3) * 1000, torch.randint(0, 3, (4,), generator=gen).float()
for eps in [0.0, 0.1]:
    run(f"cross_entropy_large_ls{eps}", lambda x, t: F.cross_entropy(x, t.long(), label_smoothing=eps), logits,
        {"op": "cross_entropy", "reduction": "mean", "label_smoothing": eps}, target=target)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
tmp = OUT + ".tmp"
with open(tmp, "w") as f:
    f.write("{\n")
    f.write(",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in cases.items()))
    f.write("\n}\n")
os.replace(tmp, OUT)
print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
