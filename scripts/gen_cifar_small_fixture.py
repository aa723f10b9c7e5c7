#!/usr/bin/python3
"""Golden fixture for one full cifar-small training step, from PyTorch.

Writes two safetensors files (written by hand: Debian has no safetensors package):
  tests/fixtures/cifar_small_in.safetensors   the model's state_dict (PyTorch names),
                                              "input" (8,3,32,32) and "target" (8,) as I64
  tests/fixtures/cifar_small_out.safetensors  "eval_logits" (the loaded model in eval),
                                              "logits" and "loss" of the training forward,
                                              "grad.<param>" for every parameter,
                                              "buffer.<name>" for every buffer after the step,
                                              "param_after.<param>" after one SGD step
                                              (lr 0.1, momentum 0.9, nesterov, weight decay 5e-4)
Run: /usr/bin/python3 scripts/gen_cifar_small_fixture.py   (needs Debian's python3-torch)
"""
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


def save_safetensors(path, tensors):
    """The safetensors layout: u64 header length, JSON header padded to 8 bytes, raw data."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    os.replace(tmp, path)


def cifar_small():
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2048, 10))


def main():
    torch.manual_seed(0)
    model = cifar_small()
    # Non-default BatchNorm state, so that loading it is what the test exercises.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(1 + 0.1 * torch.rand_like(m.running_var))
                m.num_batches_tracked.fill_(3)
    x = torch.randn(8, 3, 32, 32)
    target = torch.randint(0, 10, (8,))
    save_safetensors(os.path.join(OUT, "cifar_small_in.safetensors"),
                     {**model.state_dict(), "input": x, "target": target})

    out = {}
    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model(x)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    out["logits"], out["loss"] = logits, loss
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad
    for name, b in model.named_buffers():
        out["buffer." + name] = b
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    opt.step()
    for name, p in model.named_parameters():
        out["param_after." + name] = p
    save_safetensors(os.path.join(OUT, "cifar_small_out.safetensors"), out)
    print(f"loss {loss.item():.6f}; wrote {len(out)} expected tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
