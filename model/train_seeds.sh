#!/usr/bin/env bash
# Train LensNet once per seed on the same simulated seasons (the instances are built once and
# cached), each into OUT/seed-N/. Evaluate them together afterwards with
#   lensnet evaluate --artifact OUT/seed-1/lensnet-*.pt --artifact OUT/seed-2/... 
#
#   model/train_seeds.sh OUT SEED [SEED...]        extra `lensnet train` options in $TRAIN_ARGS
#
# Environment: LENSNET (the command; default `lensnet`, e.g. `python3 -m consumer.cli`),
# WORKERS (processes building the instances, default: all cores), DEVICE (auto, cpu, cuda).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT SEED [SEED...]" >&2; exit 2; }
out=$1
shift
lensnet=${LENSNET:-lensnet}
workers=${WORKERS:-$(nproc)}
device=${DEVICE:-auto}
mkdir -p "$out"
for seed in "$@"; do
  started=$(date +%s)
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
  $lensnet train --seed "$seed" --workers "$workers" --device "$device" --no-progress \
    --out "$out/seed-$seed" ${TRAIN_ARGS:-} 2>&1 | tee "$out/seed-$seed.log"
  echo "seed $seed: $(( $(date +%s) - started )) s" | tee -a "$out/timings.txt"
done
