#!/usr/bin/python3
"""Safetensors interop between PyTorch and Norma, both ways, without the
safetensors package (Debian has none): the format is written and read by hand.

  /usr/bin/python3 scripts/gen_safetensors_fixture.py
      writes tests/fixtures/torch_mlp.safetensors, the state_dict of a seeded
      nn.Sequential(Linear(4, 3), ReLU(), Linear(3, 2)), and torch_mlp.json with
      a fixed input and torch's output; tests/safetensors_test.cpp loads both.

  /usr/bin/python3 scripts/gen_safetensors_fixture.py --check FILE
      checks that a file Norma wrote loads in torch. The test case
      "safetensors: writes a Norma MLP for the torch check" writes one to
      <build dir>/norma_mlp.safetensors, so after ctest:
        /usr/bin/python3 scripts/gen_safetensors_fixture.py --check build/norma_mlp.safetensors
      It loads FILE with load_state_dict(strict=True) into the same torch
      model, compares torch's output on the fixture input with the output Norma
      stored in the metadata ("norma_output"), and checks that FILE's bytes are
      what write_safetensors (the reference layout) produces for its contents.
      When the safetensors package is installed, it loads FILE with it too.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

# safetensors dtype <-> little-endian numpy dtype
NUMPY = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
NAMES = {np.dtype(v): k for k, v in NUMPY.items()}


def write_safetensors(path, tensors, metadata=None):
    """{name: tensor} as the safetensors library writes it: u64 header length,
    compact JSON header ("__metadata__" first) padded with spaces to a multiple
    of 8, then the data, wider dtypes first and by name within a width."""
    arrays = {k: t.detach().cpu().contiguous().numpy() for k, t in tensors.items()}
    arrays = {k: a.astype(a.dtype.newbyteorder("<")) for k, a in arrays.items()}
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name in sorted(arrays, key=lambda k: (-arrays[k].itemsize, k)):
        data = arrays[name].tobytes()
        header[name] = {"dtype": NAMES[arrays[name].dtype], "shape": list(arrays[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) from a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=NUMPY[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(a.copy())
    return tensors, metadata


def mlp():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def generate():
    torch.manual_seed(1)  # a seed where every hidden unit is both active and clipped by the ReLU
    model = mlp()
    x = torch.randn(8, 4)
    with torch.no_grad():
        active = model[1](model[0](x)) > 0
        assert active.any(0).all() and (~active).any(0).all() and active.any(1).all()
        y = model(x)
    write_safetensors(os.path.join(FIXTURES, "torch_mlp.safetensors"), model.state_dict(), {"format": "pt"})
    with open(os.path.join(FIXTURES, "torch_mlp.json"), "w") as f:
        json.dump({"input_shape": list(x.shape), "input": x.flatten().tolist(),
                   "output_shape": list(y.shape), "output": y.flatten().tolist()}, f)
        f.write("\n")
    print(f"wrote torch_mlp.safetensors and torch_mlp.json to {os.path.normpath(FIXTURES)}")


def check(path):
    tensors, metadata = read_safetensors(path)
    model = mlp()
    model.load_state_dict(tensors, strict=True)
    with open(os.path.join(FIXTURES, "torch_mlp.json")) as f:
        fixture = json.load(f)
    x = torch.tensor(fixture["input"]).reshape(fixture["input_shape"])
    with torch.no_grad():
        got = model(x).flatten()
    want = torch.tensor(json.loads(metadata["norma_output"]))
    diff = (got - want).abs().max().item()
    ok = diff <= 1e-6
    print(f"{path}: {len(tensors)} tensors {sorted(tensors)}, metadata keys {sorted(metadata)}")
    print(f"torch output vs Norma's: max abs diff {diff:.3g} ({'ok' if ok else 'FAIL'})")

    again = path + ".py"
    write_safetensors(again, tensors, metadata)
    with open(path, "rb") as a, open(again, "rb") as b:
        same = a.read() == b.read()
    os.remove(again)
    print(f"bytes identical to the reference layout: {same}")
    ok = ok and same
    try:
        from safetensors.torch import load_file
    except ImportError:
        print("safetensors package not installed: skipped loading with it")
    else:
        theirs = load_file(path)
        same = theirs.keys() == tensors.keys() and all(torch.equal(theirs[k], tensors[k]) for k in tensors)
        print(f"safetensors.torch.load_file agrees: {same}")
        ok = ok and same
    return ok


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    generate()
