#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, tests/fuzz/corpus/{cifar,safetensors,cli}/:
small valid inputs (and a few near misses) in each target's input format, so
libFuzzer starts from the parsers' main paths. Run from the repository root;
the output is committed (the build needs no Python)."""
import hashlib
import json
import os
import shutil
import struct

OUT = "tests/fuzz/corpus"
SEP = b"NORMAFILE"  # tests/fuzz/cifar_fuzz.cpp's file separator


def write(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- cifar: flags byte (1 CIFAR-100, 2 train, 4 limit byte follows), then files
def record(labels, seed):
    return bytes(labels) + bytes((seed * 31 + i * 7) % 256 for i in range(3072))


def sums(files):
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files).encode()


test10 = record([3], 1)
write("cifar", "test10", b"\x00" + test10)
write("cifar", "test10_limit1", b"\x04\x01" + test10 + record([9], 2))
write("cifar", "test10_sha256", b"\x00" + test10 + SEP + sums([("test_batch.bin", test10)]))
write("cifar", "test10_bad_label", b"\x00" + record([10], 3))
write("cifar", "test100", b"\x01" + record([5, 42], 4))
train10 = [record([i], 10 + i) for i in range(5)]
write("cifar", "train10", b"\x02" + SEP.join(train10))
train100 = record([19, 99], 20)
write("cifar", "train100_sha256_binary", b"\x03" + train100 + SEP +
      f"{hashlib.sha256(train100).hexdigest().upper()} *train.bin\n".encode())


# --- safetensors: files as the reference writer lays them out
def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] in data order."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


write("safetensors", "f32_i64_metadata", safetensors(
    [("bn.num_batches_tracked", "I64", [], struct.pack("<q", 7)),
     ("w", "F32", [2, 3], struct.pack("<6f", 1, -2, 0.5, 3, 4, -0.25))], {"format": "pt", "epoch": "3"}))
write("safetensors", "f64_i32", safetensors(
    [("a", "F64", [3], struct.pack("<3d", 1.5, -2.0, 1e-3)), ("b", "I32", [2, 1], struct.pack("<2i", -5, 16777216))]))
write("safetensors", "empty_and_scalar", safetensors(
    [("e", "F32", [0], b""), ("z", "F32", [2, 0, 3], b""), ("s", "F32", [], struct.pack("<f", 2.5))]))
write("safetensors", "no_tensors", safetensors([], {"note": "empty"}))
shutil.copy("tests/fixtures/torch_mlp.safetensors", f"{OUT}/safetensors/torch_mlp")  # written by PyTorch

# --- cli: the arguments after `norma`, one per line
for name, args in {
    "train": "train --epochs 2 --batch-size 64 --lr 0.1 --momentum 0.9 --label-smoothing 0.1",
    "train_adamw": "train --optimizer=adamw --schedule cosine --warmup 1 --no-nesterov --weight-decay 0 "
                   "--limit 100 --test-limit 50 --quiet --json",
    "train_files": "train --data /tmp --checkpoint c.ckpt --metrics m.csv --metrics-steps --bn-stats b.csv "
                   "--bn-stats-every 10 --plot p.png --detect-anomaly",
    "train_model": "train --bn-preset pytorch --model cifar-small --seed 7 --threads 2 --no-augment",
    "train_distributed": "train --distributed --no-sync-bn",
    "eval": "eval --checkpoint /etc/passwd --batch-size 100 --limit 10 --fuse-bn --json",
    "bench": "bench --steps 5 --warmup 0 --batch-size 32 --threads 1 --json",
    "summary": "summary --model resnet8",
    "download": "download cifar10 --dir /tmp/x",
    "demo": "demo --steps 10 --lr 0.5 --seed 3",
    "help": "--help",
    "train_help": "train --help",
    "unknown": "bogus",
}.items():
    write("cli", name, "\n".join(args.split(" ")))
