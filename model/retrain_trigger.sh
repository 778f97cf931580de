#!/usr/bin/env bash
# LensNet on another AlertFinder rule's calls, three seeds, then the validation check: the
# Generalise issue's next step (model/README.md, "The trigger is part of the recipe"), sized for
# one GPU device call (~98 s of instances with 16 processes, then ~2.5 min a seed on an H200).
# The test seasons play no part: `lensnet evaluate` on the chosen artifacts comes after.
#
#   model/retrain_trigger.sh OUT [SEED...]           (default seeds 1 2 3)
#   (on the device machine: LENSNET="python3 -m consumer.cli" PYTHON=python3 model/retrain_...)
#
# Environment: HIGH, LOW (rules k/n@n_sigma:dchi2_min[~average][^part]; default
# 4/5@2.5:100~4^2 and 6/10@2.5:100~3^2, the validation scan's highest event ceiling at a
# moderate load),
# NEGATIVE_CROPS (default 12), MINUTES (training budget a seed, default 2.5), EXTRA_ARGS (more
# `lensnet train` options), VALIDATION_STARS (stars a validation season in the check, default
# 2000), LENSNET (the command, default `lensnet`), PYTHON (default python3), DEVICE (default
# auto), WORKERS (default all cores). Writes OUT/seed-N/ (artifact and card), OUT/seed-N.log, OUT/timings.txt, and
# OUT/validation.txt (the check's printout) with OUT/calls-validation.npz.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT [SEED...]" >&2; exit 2; }
out=$1
shift
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
high=${HIGH:-4/5@2.5:100~4^2}
low=${LOW:-6/10@2.5:100~3^2}
here=$(cd "$(dirname "$0")" && pwd)
export TRAIN_ARGS="--negative-crops ${NEGATIVE_CROPS:-12} --site-loss-weight 1 \
--high-cadence-rule $high --low-cadence-rule $low --max-minutes ${MINUTES:-2.5} ${EXTRA_ARGS:-}"
"$here/train_seeds.sh" "$out" "${seeds[@]}"
artifacts=()
for seed in "${seeds[@]}"; do
  for path in "$out/seed-$seed"/lensnet-*.pt; do artifacts+=(--artifact "$path"); done
done
${PYTHON:-python3} -m model.evaluation.validation_check "${artifacts[@]}" \
  --workers "${WORKERS:-$(nproc)}" --device "${DEVICE:-auto}" \
  --validation-stars "${VALIDATION_STARS:-2000}" \
  --out "$out/calls-validation.npz" | tee "$out/validation.txt"
