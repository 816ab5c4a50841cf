#!/usr/bin/env bash
# How the bundled models are trained: each step is one resumable piece that ends in a model
# file the next piece starts from (--init-model), so a run can span several sessions or jobs.
#
#   training/bundled_models.sh STEP   (base | fold-c07 | fold-c26 | flair | flair-t1w)
#
# XS: the Lesjak et al. 2017 cross-sectional cases (CC-BY) with derivatives/manual masks.
# OUT: models and work folders (checkpoints every 100 iterations; rerun a step to resume).
# UNTIL: stop this call at that iteration and write the model so far (default: the end).
# INIT (base only): start from this model file, e.g. training/pieces/base_flair.safetensors
# where the base's checkpoint is not at hand.
# ITERATIONS: the length of this step's learning-rate schedule (base 16000, others 4000).
set -euo pipefail
STEP=${1:?base, fold-c07, fold-c26, flair or flair-t1w}
XS=${XS:-../shared/data/ms-crosssectional}
OUT=${OUT:-$HOME/mdgru-train}
TRAIN=${TRAIN:-.venv/bin/mdgru-bids-train}
COMMON=(--patch-size 48 64 80 --batch-size 2 --learning-rate 2e-3
        --validation-fraction 0 --random-seed 0 --no-progress --resume
        --skip-bids-validation --template MNI152NLin2009aSym)
[ -n "${UNTIL:-}" ] && COMMON+=(--until "$UNTIL")
mkdir -p "$OUT/models"
case $STEP in
  # Synthetic patches from the template anatomy alone: nothing from any real case, so every
  # leave-one-out fold may start from it.
  base) "$TRAIN" "$OUT/models/base_flair.safetensors" --inputs FLAIR "${COMMON[@]}" --iterations "${ITERATIONS:-16000}" \
          -w "$OUT/work-base" --nprocs 2 ${INIT:+--init-model "$INIT"} ;;
  # Leave-one-out folds: the base fine-tuned with one real case (its anatomy, image and
  # lesions) and the template; scored on the other case by benchmarks/eval_models.py.
  fold-c07) "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/flair_without_c07.safetensors" \
          --participant-label c26 --init-model "$OUT/models/base_flair.safetensors" \
          --inputs FLAIR "${COMMON[@]}" --iterations "${ITERATIONS:-4000}" -w "$OUT/work-fold-c07" --nprocs 2 ;;
  fold-c26) "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/flair_without_c26.safetensors" \
          --participant-label c07 --init-model "$OUT/models/base_flair.safetensors" \
          --inputs FLAIR "${COMMON[@]}" --iterations "${ITERATIONS:-4000}" -w "$OUT/work-fold-c26" --nprocs 2 ;;
  # The shipped FLAIR model: the base fine-tuned with both real cases.
  flair) "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/mdgru_flair.safetensors" \
          --init-model "$OUT/models/base_flair.safetensors" \
          --inputs FLAIR "${COMMON[@]}" --iterations "${ITERATIONS:-4000}" -w "$OUT/work-flair" \
          --nprocs 2 ;;
  # The shipped FLAIR+T1w model: the shipped FLAIR model widened to take the T1w too (its
  # weights start at zero: the model begins as the FLAIR model) and trained with synthetic
  # FLAIR+T1w patches and both real cases.
  flair-t1w) "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/mdgru_flair_t1w.safetensors" \
          --init-model "$OUT/models/mdgru_flair.safetensors" --inputs FLAIR T1w "${COMMON[@]}" \
          --iterations "${ITERATIONS:-2000}" -w "$OUT/work-flair-t1w" --nprocs 2 ;;
  *) echo "unknown step $STEP" >&2; exit 64 ;;
esac
