# Batch vs running variance of two BatchNorm2d layers of cifar-small during the
# 10-epoch run (norma train --bn-stats cifar10_bn_stats.csv). From docs/training:
#   gnuplot plot_bn_stats.gp
set terminal pngcairo size 1100,420 font ',10'
set output 'cifar10_bn_stats.png'
set datafile separator ','
set grid
set xlabel 'step'
set key top right
set multiplot layout 1,2
set title 'layer 1 (first BatchNorm2d, 32 channels): mean over channels'
plot '< awk -F, ''$2 == "1"'' cifar10_bn_stats.csv' using 1:4 with lines title 'batch var', \
     '' using 1:6 with lines lw 2 title 'running var', \
     '' using 1:3 with lines title 'batch mean', \
     '' using 1:5 with lines lw 2 title 'running mean'
set title 'layer 15 (last BatchNorm2d, 128 channels): mean over channels'
plot '< awk -F, ''$2 == "15"'' cifar10_bn_stats.csv' using 1:4 with lines title 'batch var', \
     '' using 1:6 with lines lw 2 title 'running var', \
     '' using 1:3 with lines title 'batch mean', \
     '' using 1:5 with lines lw 2 title 'running mean'
unset multiplot
