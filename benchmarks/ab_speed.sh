#!/usr/bin/env bash
# Step and epoch time of this checkout against another one, alternating between the two so that both see the same
# machine: bench_model.py (one training step) and bench_train.py --epochs 1 (one epoch), on the Toys default
# (`preprocess` and `train` with their default settings).
#
#   git worktree add ../base <commit>; bash benchmarks/ab_speed.sh ../base [ROUNDS] [THREADS...]
#
# Run it on an otherwise idle machine; with BUSY=1 a one-thread matrix-multiply loop runs beside it throughout.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=$(cd "$1" && pwd)
rounds=${2:-2}
shift $(( $# > 1 ? 2 : 1 ))
threads=${*:-1 2}
work=${WORK:-$here/runs/bench/ab}
if [ "${BUSY:-0}" = 1 ]; then
  python -c "import torch; torch.set_num_threads(1); a = torch.randn(1500, 1500)
while True: a @ a" &
  trap 'kill $!' EXIT
fi
for round in $(seq "$rounds"); do
  for n in $threads; do
    for side in base here; do
      dir=${!side}
      echo "== round $round, $side ($dir), $n thread(s)"
      PYTHONPATH=$dir python "$dir/benchmarks/bench_model.py" --out "$work/$side/toys-data" --threads "$n" \
        | grep -E "graph per batch|median"
      PYTHONPATH=$dir python "$dir/benchmarks/bench_train.py" --work "$work/$side" --epochs 1 --set "threads=$n" \
        | grep -E "seconds per training epoch"
    done
  done
done
