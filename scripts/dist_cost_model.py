#!/usr/bin/env python3
"""Paper cost model for docs/distributed.md: ring-allreduce time of cifar-small's
gradients, and the per-rank batch below which a step stops hiding it.

  python3 scripts/dist_cost_model.py [--bytes 640936] [--alpha-us 10] [--t-img-ms T]

Ring allreduce of S bytes over K ranks (reduce-scatter then allgather, 2(K-1)
steps of S/K bytes each):  T = 2(K-1)/K * S / BW + 2(K-1) * alpha.
SyncBatchNorm adds 15 small allreduces per step (5 layers x 3), latency-bound:
about 15 * 2 * ceil(log2 K) * alpha (recursive doubling).
"""
import argparse
import math

p = argparse.ArgumentParser()
p.add_argument("--bytes", type=int, default=640936, help="gradient bytes (cifar-small: 160234 floats)")
p.add_argument("--alpha-us", type=float, default=10.0, help="per-message latency in microseconds")
p.add_argument("--t-img-ms", type=float, default=None, help="measured compute per image per rank (ms)")
a = p.parse_args()

links = [10, 25, 100]
ranks = [2, 4, 8, 16, 32, 64]
alpha = a.alpha_us * 1e-6
print(f"S = {a.bytes} bytes, alpha = {a.alpha_us} us per message")
print("ring allreduce of the gradients, ms (bandwidth term + latency term):")
print("K    " + "".join(f"{b:>22} Gb/s" for b in links))
for k in ranks:
    row = []
    for b in links:
        bw = b * 1e9 / 8
        t_bw = 2 * (k - 1) / k * a.bytes / bw
        t_lat = 2 * (k - 1) * alpha
        row.append(f"{(t_bw + t_lat) * 1e3:8.3f} ({t_bw * 1e3:.3f}+{t_lat * 1e3:.3f})")
    print(f"{k:<5}" + "".join(f"{r:>27}" for r in row))
print("SyncBatchNorm collectives per step, ms:")
print("  " + ", ".join(f"K={k}: {15 * 2 * math.ceil(math.log2(k)) * alpha * 1e3:.2f}" for k in ranks))
if a.t_img_ms:
    print(f"per-rank batch b* at which the allreduce equals the backward pass (2/3 of {a.t_img_ms} ms per image):")
    for b in links:
        bw = b * 1e9 / 8
        cells = []
        for k in ranks:
            t = 2 * (k - 1) / k * a.bytes / bw + 2 * (k - 1) * alpha + 15 * 2 * math.ceil(math.log2(k)) * alpha
            cells.append(f"K={k}: {t / (2 / 3 * a.t_img_ms * 1e-3):.3f}")
        print(f"  {b} Gb/s: " + ", ".join(cells))
