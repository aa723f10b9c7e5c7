#!/usr/bin/python3
"""Golden values from PyTorch for Conv2d, Linear and BatchNorm2d (issue 3).

Each case holds its inputs, parameters, a fixed upstream gradient "grad_output",
the output and every gradient; BatchNorm cases also hold the buffers after the
forward. Written to tests/fixtures/conv_bn_golden.json (small: tiny shapes).
Run: /usr/bin/python3 scripts/gen_conv_bn_fixtures.py   (needs Debian's python3-torch)
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "conv_bn_golden.json")


def enc(t):
    t = t.detach().float().contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.flatten().tolist()]}


def conv_case(N, C, H, W, K, k, stride, padding, dilation, groups, bias):
    x = torch.randn(N, C, H, W, requires_grad=True)
    w = torch.randn(K, C // groups, *k, requires_grad=True)
    b = torch.randn(K, requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    g = torch.randn_like(y)
    y.backward(g)
    case = {"config": {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
                       "groups": groups, "bias": bias},
            "input": enc(x), "weight": enc(w), "grad_output": enc(g), "output": enc(y),
            "grad_input": enc(x.grad), "grad_weight": enc(w.grad)}
    if bias:
        case["bias"], case["grad_bias"] = enc(b), enc(b.grad)
    return case


def linear_case(shape, out_features, bias):
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(out_features, shape[-1], requires_grad=True)
    b = torch.randn(out_features, requires_grad=True) if bias else None
    y = F.linear(x, w, b)
    g = torch.randn_like(y)
    y.backward(g)
    case = {"config": {"bias": bias}, "input": enc(x), "weight": enc(w), "grad_output": enc(g),
            "output": enc(y), "grad_input": enc(x.grad), "grad_weight": enc(w.grad)}
    if bias:
        case["bias"], case["grad_bias"] = enc(b), enc(b.grad)
    return case


def bn_case(shape, affine, training, momentum, steps):
    """`steps` training forwards on fresh inputs (buffers carried over), then the
    checked forward/backward in the given mode."""
    C = shape[1]
    bn = torch.nn.BatchNorm2d(C, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(1 + 0.2 * torch.randn(C))
            bn.bias.copy_(0.2 * torch.randn(C))
    warmup = [torch.randn(*shape) * 2 + 1 for _ in range(steps)]
    bn.train()
    with torch.no_grad():
        for w in warmup:
            bn(w)
    bn.train(training)
    x = (torch.randn(*shape) * 3 - 1).requires_grad_()
    y = bn(x)
    g = torch.randn_like(y)
    y.backward(g)
    case = {"config": {"affine": affine, "training": training, "momentum": momentum},
            "warmup": [enc(w) for w in warmup], "input": enc(x), "grad_output": enc(g), "output": enc(y),
            "grad_input": enc(x.grad), "running_mean": enc(bn.running_mean), "running_var": enc(bn.running_var),
            "num_batches_tracked": int(bn.num_batches_tracked)}
    if affine:
        case["weight"], case["bias"] = enc(bn.weight), enc(bn.bias)
        case["grad_weight"], case["grad_bias"] = enc(bn.weight.grad), enc(bn.bias.grad)
    return case


def main():
    torch.manual_seed(42)
    cases = {
        "conv_3x3_pad1": conv_case(2, 3, 6, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
        "conv_stride2_odd": conv_case(1, 2, 7, 5, 3, (3, 3), (2, 2), (0, 0), (1, 1), 1, True),
        "conv_dilation2_pad2": conv_case(2, 2, 7, 7, 2, (3, 3), (1, 1), (2, 2), (2, 2), 1, False),
        "conv_groups2_rect": conv_case(2, 4, 5, 6, 6, (2, 3), (1, 2), (1, 0), (1, 1), 2, True),
        "conv_1x1_batch1": conv_case(1, 5, 3, 3, 2, (1, 1), (1, 1), (0, 0), (1, 1), 1, False),
        "linear_2d": linear_case((4, 6), 3, True),
        "linear_3d_nobias": linear_case((2, 3, 5), 4, False),
        "bn_train_affine": bn_case((4, 3, 3, 2), True, True, 0.1, 3),
        "bn_train_noaffine_batch1": bn_case((1, 2, 3, 3), False, True, 0.1, 2),
        "bn_train_cumulative": bn_case((3, 2, 2, 2), True, True, None, 4),
        "bn_eval_affine": bn_case((2, 3, 2, 3), True, False, 0.1, 3),
        # Shapes that Norma's conv2d runs through Winograd F(2x2, 3x3) (>= 16 channels,
        # 3x3, stride 1): odd output sizes, paddings 0, 1 and 2. Last, so the cases
        # above keep their random draws.
        "conv_winograd_pad1": conv_case(2, 16, 6, 5, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
        "conv_winograd_pad0_odd": conv_case(1, 16, 7, 8, 20, (3, 3), (1, 1), (0, 0), (1, 1), 1, False),
        "conv_winograd_pad2": conv_case(1, 17, 4, 5, 16, (3, 3), (1, 1), (2, 2), (1, 1), 1, True),
    }
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cases, f)
    os.replace(tmp, OUT)


if __name__ == "__main__":
    main()
