#!/usr/bin/python3
"""The `norma train` recipe in PyTorch (Debian's python3-torch), for side-by-side
accuracy and time: cifar-small, SGD nesterov, one-cycle lr 0.2 per batch, weight
decay on conv/linear weights only, label smoothing 0.1, gradients clipped to norm
1, random crop (zero padding 2) + flip, CIFAR-10 normalisation, flip test-time
augmentation. The flags' defaults are `norma train`'s; issue 5's reference run was
--lr 0.05 --label-smoothing 0 --crop-padding 4 --tta none --clip-grad-norm 0.

  /usr/bin/python3 scripts/torch_cifar_recipe.py --data ../shared/cifar10/cifar-10-batches-bin \
      --epochs 1 --limit 10000 --threads 2
"""
import argparse, json, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", default="../shared/cifar10/cifar-10-batches-bin")
p.add_argument("--epochs", type=int, default=15)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--lr", type=float, default=0.2)
p.add_argument("--momentum", type=float, default=0.9)
p.add_argument("--weight-decay", type=float, default=5e-4)
p.add_argument("--label-smoothing", type=float, default=0.1)
p.add_argument("--clip-grad-norm", type=float, default=1.0, help="0: no clipping")
p.add_argument("--limit", type=int, default=-1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--channels-last", action="store_true")
p.add_argument("--crop-padding", type=int, default=2)
p.add_argument("--tta", choices=["none", "flip"], default="flip")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)

def load(names):
    raw = np.concatenate([np.fromfile(os.path.join(a.data, n), np.uint8).reshape(-1, 3073) for n in names])
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

xtr, ytr = load([f"data_batch_{i}.bin" for i in range(1, 6)])
if a.limit > 0: xtr, ytr = xtr[:a.limit], ytr[:a.limit]
xte, yte = load(["test_batch.bin"])
mean = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
std = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)
norm = lambda x: torch.from_numpy(((x.astype(np.float32) / 255) - mean) / std)

def conv_bn(i, o): return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
model = nn.Sequential(*conv_bn(3, 32), *conv_bn(32, 32), nn.MaxPool2d(2), *conv_bn(32, 64), *conv_bn(64, 64),
                      nn.MaxPool2d(2), *conv_bn(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2048, 10))
fmt = torch.channels_last if a.channels_last else torch.contiguous_format
model = model.to(memory_format=fmt)
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0}],
                      lr=a.lr, momentum=a.momentum, nesterov=True)
steps = (len(xtr) + a.batch_size - 1) // a.batch_size
sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps * a.epochs)

def augment(x):
    n = len(x)
    P = a.crop_padding
    padded = np.zeros((n, 3, 32 + 2 * P, 32 + 2 * P), np.uint8)
    padded[:, :, P:32 + P, P:32 + P] = x
    dy, dx = rng.integers(0, 2 * P + 1, n), rng.integers(0, 2 * P + 1, n)
    out = np.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip][..., ::-1]
    return out

t0 = time.time(); train_s = 0
for epoch in range(a.epochs):
    model.train()
    perm = rng.permutation(len(xtr))
    tl = tc = 0
    for s in range(steps):
        idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
        x = norm(augment(xtr[idx])).contiguous(memory_format=fmt)
        y = torch.from_numpy(ytr[idx])
        ts = time.time()
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=a.label_smoothing)
        opt.zero_grad(); loss.backward()
        if a.clip_grad_norm > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_grad_norm)
        opt.step(); sched.step()
        train_s += time.time() - ts
        tl += loss.item() * len(idx); tc += (out.argmax(1) == y).sum().item()
    model.eval(); el = ec = 0
    with torch.no_grad():
        for s in range(0, len(xte), 500):
            x = norm(xte[s:s + 500]).contiguous(memory_format=fmt); y = torch.from_numpy(yte[s:s + 500])
            out = model(x) if a.tta == "none" else (model(x) + model(x.flip(3))) / 2
            el += F.cross_entropy(out, y, reduction="sum").item(); ec += (out.argmax(1) == y).sum().item()
    print(f"epoch {epoch + 1} train loss {tl / len(xtr):.4f} acc {tc / len(xtr):.4f} "
          f"test loss {el / len(xte):.4f} acc {ec / len(xte):.4f} wall {time.time() - t0:.1f} s", flush=True)
print(json.dumps({"epochs": a.epochs, "test_acc": ec / len(xte), "test_loss": el / len(xte),
                  "train_img_per_s": len(xtr) * a.epochs / train_s, "wall_s": time.time() - t0}))
