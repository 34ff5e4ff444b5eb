#!/usr/bin/env bash
# The revision-2 unlearning benchmark (issue 9 §4) in two lanes, one process each (two CPU cores):
#   lane lfm2k : (a) Last.fm-2K x MGCN x {user, item, interaction}, then (c) user sizes 1 / 10 users,
#                then (d) Last.fm-2K x MIG-GT
#   lane ml100k: (b) MovieLens-100K x MGCN x {user, item, interaction}, then (d) MovieLens-100K x MIG-GT
# Every step is `tru bench` (resumable: rerun this script to continue where it stopped).
#   usage: benchmarks/bench_v2_lanes.sh lfm2k|ml100k [ROOT]     (ROOT default scratch/bench2)
set -euo pipefail
lane=${1:?lane: lfm2k or ml100k}
root=${2:-scratch/bench2}
tru=${TRU:-.venv/bin/tru}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
common=(--seeds 10 11 12 --epochs mgcn=400 miggt=300 --threads 1 --out "$root/run-$lane")
case "$lane" in
  lfm2k)
    $tru bench --data "$root/lfm2k" --backbone mgcn --regime user item interaction "${common[@]}"
    $tru bench --data "$root/lfm2k" --backbone mgcn --regime user --sizes 1 10 "${common[@]}"
    $tru bench --data "$root/lfm2k" --backbone miggt --regime user item interaction "${common[@]}"
    ;;
  ml100k)
    $tru bench --data "$root/ml100k" --backbone mgcn --regime user item interaction "${common[@]}"
    $tru bench --data "$root/ml100k" --backbone miggt --regime user item interaction "${common[@]}"
    ;;
  *) echo "unknown lane $lane" >&2; exit 2 ;;
esac
