#!/usr/bin/env bash
# Regenerates docs/normalization/figures/*.png: runs the docs program
# bn_figures (a short cifar-small training on a synthetic task, written as CSV)
# and plots its CSV with gnuplot. Run by hand, not in CI:
#   scripts/plot_bn_figures.sh [BUILD_DIR [STEPS]]     (default: build, 200)
# BN_CSV_DIR=dir reuses the CSV of an earlier run in dir instead of training.
# Needs gnuplot (Debian: gnuplot-nox); uses its pngcairo terminal, else png.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-200}
exe="$build/docs/bn_figures"
out=docs/normalization/figures
command -v gnuplot >/dev/null || { echo "gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }

if [ -n "${BN_CSV_DIR:-}" ]; then
  csv=$BN_CSV_DIR
else
  [ -x "$exe" ] || { echo "no $exe: build first (cmake --build $build --target bn_figures)" >&2; exit 1; }
  csv=$(mktemp -d)
  trap 'rm -rf "$csv"' EXIT
  # One thread by default: on a busy machine OpenMP's spinning threads make two far slower.
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$exe" "$csv" "$steps"
fi
# Channel 0 of BatchNorm [4], one row per step (gnuplot joins lines only between consecutive rows).
awk -F, 'NR > 1 && $2 == "4" && $3 == "0"' "$csv/bn_stats_channels.csv" > "$csv/bn4_channel0.csv"

if gnuplot -e "set terminal pngcairo" 2>/dev/null; then
  term="pngcairo enhanced font 'DejaVu Sans,10'"
else
  term="png font 'DejaVuSans,9'"
fi
mkdir -p "$out"

gnuplot <<EOF
set datafile separator ","
set key top right
set grid lc rgb "#dddddd"
set style line 1 lc rgb "#1b6ca8" lw 2
set style line 2 lc rgb "#d1495b" lw 2
set style line 3 lc rgb "#2e933c" lw 2
set style line 4 lc rgb "#edae49" lw 2

# 1. Histograms of four channels before and after BatchNorm's normalisation.
set terminal $term size 960,380
set output "$out/bn_histograms.png"
set multiplot layout 1,2 title "cifar-small, conv [3] output on one batch of 64 (synthetic task, after $steps steps)"
set title "before BatchNorm [4]"
set xlabel "activation"
set ylabel "density"
plot for [c=0:3] "$csv/bn_hist.csv" skip 1 using 1:(column(c+2)) with lines ls (c+1) title sprintf("channel %d", c)
set title "after normalisation: xhat = (x - mean) / sqrt(var + eps)"
set xlabel "xhat"
plot for [c=0:3] "$csv/bn_hist.csv" skip 1 using 6:(column(c+7)) with lines ls (c+1) title sprintf("channel %d", c)
unset multiplot

# 2. running_mean under four update rules; the batch mean jumps from 0 to 2 at step 60.
set terminal $term size 760,380
set output "$out/bn_momentum.png"
set title "running\\\\_mean of one channel whose batch mean jumps from 0 to 2 at step 60"
set xlabel "training step t"
set ylabel "mean"
set key bottom right
plot "$csv/bn_momentum.csv" skip 1 using 1:2 with points pt 7 ps 0.4 lc rgb "#999999" title "batch mean", \
     "" skip 1 using 1:3 with lines ls 1 title "p = 0.1 (PyTorch, MegEngine, numpy-ml)", \
     "" skip 1 using 1:4 with lines ls 2 title "p = 0.01 (BrainPy)", \
     "" skip 1 using 1:5 with lines ls 3 dt 2 title "max(1/t, 0.1) (PuzzleLib)", \
     "" skip 1 using 1:6 with lines ls 4 title "1/t (PyTorch momentum=None)"

# 3. Batch vs running statistics of BatchNorm [4], channel 0, during training.
set terminal $term size 960,380
set output "$out/bn_batch_vs_running.png"
set key top right
set multiplot layout 1,2 title "cifar-small BatchNorm [4], channel 0, during training (synthetic task, PyTorch p = 0.1)"
set title "mean"
set xlabel "training step"
set ylabel ""
plot "$csv/bn4_channel0.csv" using 1:4 with lines lc rgb "#9ab9d6" lw 1 title "batch mean", \
     "" using 1:6 with lines ls 1 title "running\\\\_mean"
set title "variance"
set key bottom right
plot "$csv/bn4_channel0.csv" using 1:5 with lines lc rgb "#e8a3ad" lw 1 title "batch variance (unbiased)", \
     "" using 1:7 with lines ls 2 title "running\\\\_var"
unset multiplot
EOF
ls -l "$out"/*.png
