#!/usr/bin/python3
"""Norma against PyTorch on the same configuration, measured alternately in one
run (the machine's noise hits both): `norma bench --json` and
scripts/torch_bench.py in PyTorch's NCHW / channels-last layouts with its default
and its tuned allocator, several rounds; prints medians and Norma's ratio to each.

  /usr/bin/python3 scripts/bench_vs_torch.py --norma build/apps/norma --rounds 3 \
      --batch-sizes 128 --threads 2 [--steps 20] [--json out.json]
"""
import argparse, json, os, statistics, subprocess, sys

p = argparse.ArgumentParser()
p.add_argument("--norma", default="build/apps/norma")
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--batch-sizes", default="128")
p.add_argument("--threads", default="2")
p.add_argument("--steps", type=int, default=20)
p.add_argument("--json", help="write every measurement and the medians here")
a = p.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
TUNED = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"
configs = {  # name -> (command builder, extra environment)
    "norma": (lambda b, t: [a.norma, "bench", "--batch-size", str(b), "--threads", str(t), "--steps", str(a.steps),
                            "--json"], {}),
    "torch nchw": (lambda b, t: [sys.executable, f"{here}/torch_bench.py", "--batch-size", str(b), "--threads", str(t),
                                 "--steps", str(a.steps)], {}),
    "torch channels-last": (lambda b, t: [sys.executable, f"{here}/torch_bench.py", "--batch-size", str(b),
                                          "--threads", str(t), "--steps", str(a.steps), "--channels-last"], {}),
    "torch nchw tuned": (lambda b, t: [sys.executable, f"{here}/torch_bench.py", "--batch-size", str(b),
                                       "--threads", str(t), "--steps", str(a.steps)], {"GLIBC_TUNABLES": TUNED}),
    "torch channels-last tuned": (lambda b, t: [sys.executable, f"{here}/torch_bench.py", "--batch-size", str(b),
                                                "--threads", str(t), "--steps", str(a.steps), "--channels-last"],
                                  {"GLIBC_TUNABLES": TUNED}),
}

def run(cmd, env):
    e = dict(os.environ, OMP_WAIT_POLICY="passive", **env)
    out = subprocess.run(cmd, env=e, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_vs_torch: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])

results = []
for b in [int(s) for s in a.batch_sizes.split(",")]:
    for t in [int(s) for s in a.threads.split(",")]:
        samples = {name: [] for name in configs}
        for r in range(a.rounds):  # alternate: every config once per round
            for name, (cmd, env) in configs.items():
                samples[name].append(run(cmd(b, t), env))
        med = {name: {k: statistics.median(s[k] for s in runs) for k in ("train_img_per_s", "eval_img_per_s",
                                                                       "peak_rss_mb")}
               for name, runs in samples.items()}
        best_train = max(v["train_img_per_s"] for n, v in med.items() if n != "norma")
        best_eval = max(v["eval_img_per_s"] for n, v in med.items() if n != "norma")
        print(f"\nbatch {b}, {t} thread(s), median of {a.rounds} rounds, {a.steps} steps each")
        print(f"{'':28}{'train img/s':>12}{'eval img/s':>12}{'peak RSS MB':>13}{'norma/train':>13}{'norma/eval':>12}")
        for name, v in med.items():
            print(f"{name:28}{v['train_img_per_s']:12.1f}{v['eval_img_per_s']:12.1f}{v['peak_rss_mb']:13.0f}"
                  f"{med['norma']['train_img_per_s'] / v['train_img_per_s']:13.2f}"
                  f"{med['norma']['eval_img_per_s'] / v['eval_img_per_s']:12.2f}")
        print(f"Norma vs PyTorch's best: train {med['norma']['train_img_per_s'] / best_train:.2f}x, "
              f"eval {med['norma']['eval_img_per_s'] / best_eval:.2f}x")
        results.append({"batch_size": b, "threads": t, "samples": samples, "medians": med})
if a.json:
    with open(a.json + ".tmp", "w") as f: json.dump(results, f, indent=1)
    os.replace(a.json + ".tmp", a.json)
