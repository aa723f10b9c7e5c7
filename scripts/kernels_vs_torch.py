#!/usr/bin/python3
"""bench/kernels_bench.cpp (norma_bench_kernels) against scripts/torch_kernels.py,
run alternately for several rounds in one go; prints, per kernel, Norma's
median time, its rate as a fraction of the machine limit that Norma's
benchmark measured in the same run (memcpy bandwidth for BatchNorm2d, sgemm for
the convolutions), PyTorch's median time in each layout and Norma's speed-up
over PyTorch's faster layout.

  /usr/bin/python3 scripts/kernels_vs_torch.py --bench build/bench/norma_bench_kernels --threads 2 --rounds 3
"""
import argparse, json, os, statistics, subprocess, sys

p = argparse.ArgumentParser()
p.add_argument("--bench", default="build/bench/norma_bench_kernels")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--json", help="write every measurement here")
a = p.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, OMP_WAIT_POLICY="passive")

def run(cmd):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kernels_vs_torch: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])

common = ["--threads", str(a.threads), "--batch-size", str(a.batch_size), "--rounds", "3"]
norma, torch = [], []
for r in range(a.rounds):
    norma.append(run([a.bench, *common, "--json"]))
    torch.append(run([sys.executable, f"{here}/torch_kernels.py", *common]))

med = lambda xs: statistics.median(xs)
copy = med([n["memcpy_gb_per_s"] for n in norma])
gemm = med([n["sgemm_gflop_per_s"] for n in norma])
print(f"{a.threads} thread(s), batch {a.batch_size}, OpenBLAS core {norma[0]['blas_core']}, "
      f"median of {a.rounds} alternating rounds")
print(f"memcpy {copy:.1f} GB/s (read + written), sgemm 2048^3 {gemm:.1f} GFLOP/s\n")
print(f"{'kernel':<24}{'norma ms':>10}{'rate':>13}{'of limit':>10}{'torch ms':>10}{'torch CL ms':>13}{'speed-up':>10}")
for i, k in enumerate(norma[0]["kernels"]):
    name = k["name"]
    ms = med([n["kernels"][i]["ms"] for n in norma])
    bn = name.startswith("BatchNorm2d")
    rate = med([n["kernels"][i]["gb_per_s" if bn else "gflop_per_s"] for n in norma])
    frac = rate / (copy if bn else gemm)
    t = med([x[name] for x in torch])
    cl = None if bn else med([x[name + " channels-last"] for x in torch])
    best = t if cl is None else min(t, cl)
    print(f"{name:<24}{ms:10.2f}{rate:8.1f} {'GB/s' if bn else 'GF/s'}{100 * frac:9.0f}%{t:10.2f}"
          f"{'' if cl is None else f'{cl:.2f}':>13}{best / ms:9.2f}x")
if a.json:
    with open(a.json + ".tmp", "w") as f:
        json.dump({"norma": norma, "torch": torch}, f)
    os.replace(a.json + ".tmp", a.json)
