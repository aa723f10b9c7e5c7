#!/usr/bin/python3
"""PyTorch's side of bench/kernels_bench.cpp: BatchNorm2d forward+backward on
(N, 64, 32, 32) in both layouts and cifar-small's five 3x3 convolutions forward
and backward (dx and dw; dw only for the first), timed the same way (median of
--rounds rounds of --reps calls). Prints one JSON line: kernel name -> ms.

  /usr/bin/python3 scripts/torch_kernels.py --threads 2 --batch-size 128
"""
import argparse, json, statistics, time
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--reps", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
N = a.batch_size
fns = {}

for name, fmt in [("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)]:
    x = torch.randn(N, 64, 32, 32).contiguous(memory_format=fmt).requires_grad_()
    g, b = torch.ones(64, requires_grad=True), torch.zeros(64, requires_grad=True)
    rm, rv = torch.zeros(64), torch.ones(64)
    dy = torch.randn(N, 64, 32, 32).contiguous(memory_format=fmt)
    for relu in (False, True):
        def bn(x=x, g=g, b=b, rm=rm, rv=rv, dy=dy, relu=relu):
            y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=0.1)
            if relu:
                y = F.relu(y)
            y.backward(dy)
            x.grad = g.grad = b.grad = None
        fns[f"BatchNorm2d{'+ReLU' if relu else ''} {name}"] = bn

for C, K, H in [(3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8)]:
    for layout, fmt in [("", torch.contiguous_format), (" channels-last", torch.channels_last)]:
        x = torch.randn(N, C, H, H).contiguous(memory_format=fmt)
        w = torch.randn(K, C, 3, 3).contiguous(memory_format=fmt)
        dy = torch.randn(N, K, H, H).contiguous(memory_format=fmt)
        mask = [C != 3, True, False]  # the first layer's input needs no gradient
        name = f"conv {C}->{K} {H}x{H}"
        fns[f"{name} fwd{layout}"] = lambda x=x, w=w: F.conv2d(x, w, padding=1)
        fns[f"{name} bwd{layout}"] = lambda x=x, w=w, dy=dy, mask=mask: torch.ops.aten.convolution_backward(
            dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

def per_call(f):
    t0 = time.perf_counter()
    for _ in range(a.reps): f()
    return (time.perf_counter() - t0) / a.reps

for f in fns.values(): per_call(f)  # warm-up
samples = {k: [] for k in fns}
for _ in range(a.rounds):
    for k, f in fns.items(): samples[k].append(per_call(f))
print(json.dumps({k: 1e3 * statistics.median(v) for k, v in samples.items()}))
