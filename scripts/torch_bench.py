#!/usr/bin/python3
"""PyTorch's side of `norma bench`: cifar-small training-step and inference
throughput on random data, same batch, threads and SGD (nesterov) step.
Prints one JSON line like `norma bench --json`.

  /usr/bin/python3 scripts/torch_bench.py --batch-size 128 --threads 2 --steps 20 [--channels-last]
Run it under GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184
for PyTorch's best allocator setting (large blocks kept instead of returned to the OS).
"""
import argparse, json, resource, time
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--channels-last", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

def conv_bn(i, o): return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
model = nn.Sequential(*conv_bn(3, 32), *conv_bn(32, 32), nn.MaxPool2d(2), *conv_bn(32, 64), *conv_bn(64, 64),
                      nn.MaxPool2d(2), *conv_bn(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2048, 10))
fmt = torch.channels_last if a.channels_last else torch.contiguous_format
model = model.to(memory_format=fmt)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
x = torch.randn(a.batch_size, 3, 32, 32).contiguous(memory_format=fmt)
y = torch.randint(0, 10, (a.batch_size,))

def train_step():
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()

def timed(fn, steps):
    for _ in range(a.warmup): fn()
    t = time.perf_counter()
    for _ in range(steps): fn()
    return steps * a.batch_size / (time.perf_counter() - t)

model.train()
train = timed(train_step, a.steps)
model.eval()
with torch.no_grad():
    evaluate = timed(lambda: model(x), a.steps)
print(json.dumps({"framework": "pytorch", "layout": "channels_last" if a.channels_last else "nchw",
                  "batch_size": a.batch_size, "threads": a.threads, "train_img_per_s": train,
                  "eval_img_per_s": evaluate,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
