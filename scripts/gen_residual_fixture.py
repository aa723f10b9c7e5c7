#!/usr/bin/python3
"""Golden values for Norma's nn::BasicBlock and nn::resnet8 (layers/residual.h, layers/models.h).

Run from the repository root with Debian's python3-torch (no torchvision needed:
BasicBlock below is torchvision.models.resnet.BasicBlock, same members and names):
    /usr/bin/python3 scripts/gen_residual_fixture.py
It writes tests/fixtures/residual_golden.json (read by tests/residual_test.cpp):
  "blocks": {name: {"config": {"in_channels", "channels", "stride"},
                    "state": {state_dict name: T} before the step (non-default BN state),
                    "input": T, "grad_output": T,
                    "output": T (train mode), "grad_input": T, "grads": {param name: T},
                    "buffers_after": {buffer name: T} after the train-mode forward,
                    "eval_output": T (eval mode, after the step, same input)}}
  "resnet8": {"state_dict_keys": [...], "named_modules": [...], "num_parameters": n}
with T = {"shape": [...], "data": [...]} in row-major order (num_batches_tracked as float).
"""
import json
import os

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "residual_golden.json")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (expansion 1, groups 1, dilation 1)."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def resnet8():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def t2j(t):
    t = t.detach().to(torch.float32).contiguous()
    # 9 significant digits round-trip a float32 exactly.
    return {"shape": list(t.shape), "data": [float("%.9g" % v) for v in t.flatten().tolist()]}


def block_case(in_channels, channels, stride, input_shape):
    block = BasicBlock(in_channels, channels, stride)
    with torch.no_grad():  # non-default BatchNorm state, so loading it matters
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(1 + 0.2 * torch.rand_like(m.running_var))
                m.num_batches_tracked.fill_(3)
    state = {k: t2j(v) for k, v in block.state_dict().items()}
    block.train()
    x = torch.randn(input_shape).requires_grad_()
    y = block(x)
    dy = torch.randn(y.shape)
    y.backward(dy)
    case = {"config": {"in_channels": in_channels, "channels": channels, "stride": stride}, "state": state,
            "input": t2j(x), "grad_output": t2j(dy), "output": t2j(y), "grad_input": t2j(x.grad),
            "grads": {k: t2j(p.grad) for k, p in block.named_parameters()},
            "buffers_after": {k: t2j(b) for k, b in block.named_buffers()}}
    block.eval()
    with torch.no_grad():
        case["eval_output"] = t2j(block(x))
    return case


def main():
    torch.manual_seed(20240611)
    blocks = {"identity": block_case(4, 4, 1, (2, 4, 5, 5)),
              "downsample": block_case(3, 6, 2, (2, 3, 7, 7))}
    net = resnet8()
    out = {"blocks": blocks,
           "resnet8": {"state_dict_keys": list(net.state_dict().keys()),
                       "named_modules": [n for n, _ in net.named_modules()],
                       "num_parameters": sum(p.numel() for p in net.parameters())}}
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes), "
          f"resnet8 has {out['resnet8']['num_parameters']} parameters")


if __name__ == "__main__":
    main()
