#!/usr/bin/python3
"""Training throughput against batch size, from scripts/bench_vs_torch.py --json:
one panel per thread count, a line for Norma and for each PyTorch configuration.
Draws a PNG with gnuplot.

  /usr/bin/python3 scripts/plot_scaling.py scaling.json docs/performance/scaling.png
"""
import json, os, subprocess, sys, tempfile

if len(sys.argv) != 3:
    sys.exit("usage: plot_scaling.py RESULTS.json OUT.png")
results = json.load(open(sys.argv[1]))
threads = sorted({r["threads"] for r in results})
names = list(results[0]["medians"])
with tempfile.TemporaryDirectory() as tmp:
    script = [f"set terminal pngcairo size {560 * len(threads)},420", f"set output '{sys.argv[2]}.tmp'",
              f"set multiplot layout 1,{len(threads)}", "set logscale x 2", "set xlabel 'batch size'",
              "set ylabel 'training images/s'", "set key top left font ',9'", "set grid"]
    for t in threads:
        rows = sorted((r for r in results if r["threads"] == t), key=lambda r: r["batch_size"])
        plots = []
        for i, name in enumerate(names):
            path = os.path.join(tmp, f"{t}_{i}.dat")
            with open(path, "w") as f:
                for r in rows: f.write(f"{r['batch_size']} {r['medians'][name]['train_img_per_s']}\n")
            plots.append(f"'{path}' using 1:2 with linespoints title '{name}'")
        script += [f"set title 'cifar-small, {t} thread(s)'", "plot " + ", ".join(plots)]
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
