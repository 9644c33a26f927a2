# Log-scale bar chart of p50 (bar) with p90/p99 marks, from aggregate.py's latency.dat.
# usage: gnuplot -e "dat='DIR/latency.dat'; out='DIR/latency.png'; ttl='...'" latency.gp
set terminal pngcairo size 1000,520 noenhanced font ",10"
set output out
set title ttl
set logscale y 10
set ylabel "milliseconds (log scale)"
set grid ytics mytics
set style fill solid 0.7 border -1
set boxwidth 0.6
set xtics rotate by -20 nomirror
set key top left
set yrange [0.1:*]
plot dat using 0:2:xtic(1) with boxes lc rgb "#4a7ebb" title "p50", \
     '' using 0:3 with points pt 7 ps 1.2 lc rgb "#e08a00" title "p90", \
     '' using 0:4 with points pt 9 ps 1.3 lc rgb "#c00000" title "p99"
