#!/usr/bin/env bash
# How the bundled models are trained: each step is one resumable piece that ends in a model
# file the next piece starts from (--init-model), so a run can span several sessions or jobs.
#
#   training/bundled_models.sh STEP
#   STEP: base | fold-c07 | fold-c26 | flair, then fold-c07-phantoms | fold-c26-phantoms |
#         flair-phantoms (the same with the training phantoms), then fold-c07-keep |
#         fold-c26-keep | flair-keep (the keep-gate cap; KEEP, default 0.7), flair-t1w-keep,
#         then flair-more (400 iterations more; its folds: fold-c0X-recall with RECALL=0.5),
#         and last threshold MODEL (the card's lesion threshold, chosen on calibration
#         phantoms); the FLAIR+T1w model of two releases ago: flair-t1w;
#         experiment: fold-c07-consistency | fold-c26-consistency (CONSISTENCY: its weight);
#         base-keep; flair-t1w-more; fold-c07-recall | fold-c26-recall (RECALL: the loss's
#         weight of missed lesion voxels, default 0.7)
#
# XS: the Lesjak et al. 2017 cross-sectional cases (CC-BY) with derivatives/manual masks.
# OUT: models and work folders (checkpoints every 100 iterations; rerun a step to resume).
# UNTIL: stop this call at that iteration and write the model so far (default: the end).
# INIT (base only): start from this model file, e.g. training/pieces/base_flair.safetensors
# where the base's checkpoint is not at hand.
# ITERATIONS: the length of this step's learning-rate schedule (base 16000, *-phantoms and
# flair-t1w and flair-t1w-keep 1200, fold-*-keep and flair-keep 1000, fold-*-recall,
# flair-more and flair-t1w-more 400, others 4000).
# PHANTOMS / CALIBRATION: the training phantoms (seed 11) and the calibration phantoms
# (seed 23), made here where missing; evaluation uses seeds 7 and 99, never these.
set -euo pipefail
STEP=${1:?a step: see the top of this file}
XS=${XS:-../shared/data/ms-crosssectional}
OUT=${OUT:-$HOME/mdgru-train}
TRAIN=${TRAIN:-.venv/bin/mdgru-bids-train}
COMMON=(--patch-size 48 64 80 --batch-size 2 --learning-rate 2e-3
        --validation-fraction 0 --random-seed 0 --no-progress --resume
        --skip-bids-validation --template MNI152NLin2009aSym)
[ -n "${UNTIL:-}" ] && COMMON+=(--until "$UNTIL")
PHANTOMS=${PHANTOMS:-$OUT/phantom-train}
CALIBRATION=${CALIBRATION:-$OUT/phantom-calibration}
WITH_PHANTOMS=(--add-dataset "$PHANTOMS" "$PHANTOMS/derivatives/truth")
mkdir -p "$OUT/models"
phantoms() {  # DIR SEED PARTICIPANTS: the phantom generator's participants, made once
  [ -d "$1" ] || "$(dirname "$TRAIN")/mdgru-bids-phantom" "$1" --participants "$3" --sessions 2 --seed "$2" --resolution 1
}
fold_with_phantoms() {  # FROM TO ITERATIONS [ARGS...]: a fold (from $STEP) fine-tuned on the
  # other real case and the training phantoms, from models/flair_without_CASE_FROM to _TO
  local case=${STEP#fold-}; case=${case%%-*}
  local other; other=$([ "$case" = c07 ] && echo c26 || echo c07)
  phantoms "$PHANTOMS" 11 3
  "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/flair_without_${case}$2.safetensors" \
      --participant-label "$other" --init-model "$OUT/models/flair_without_${case}$1.safetensors" \
      --inputs FLAIR "${COMMON[@]}" "${WITH_PHANTOMS[@]}" --iterations "${ITERATIONS:-$3}" \
      -w "$OUT/work-$STEP" --nprocs 2 "${@:4}"
}
shipped_with_phantoms() {  # FROM TO ITERATIONS [ARGS...]: models/FROM fine-tuned on both real
  # cases and the training phantoms into models/TO (ARGS: --inputs, --keep-max, ...)
  phantoms "$PHANTOMS" 11 3
  "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/$2.safetensors" \
      --init-model "$OUT/models/$1.safetensors" "${COMMON[@]}" "${WITH_PHANTOMS[@]}" \
      --iterations "${ITERATIONS:-$3}" -w "$OUT/work-$STEP" --nprocs 2 "${@:4}"
}
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
  # The FLAIR model's first piece: the base fine-tuned with both real cases.
  flair) "$TRAIN" "$XS" "$XS/derivatives/manual" "$OUT/models/mdgru_flair.safetensors" \
          --init-model "$OUT/models/base_flair.safetensors" \
          --inputs FLAIR "${COMMON[@]}" --iterations "${ITERATIONS:-4000}" -w "$OUT/work-flair" \
          --nprocs 2 ;;
  # Each of the three fine-tuned again with the phantom generator's training phantoms added
  # (each dataset is sampled equally often): without them the models drew many small false
  # lesions in the phantoms' noisy white matter (training/README.md).
  fold-c07-phantoms|fold-c26-phantoms) fold_with_phantoms "" _phantoms 1200 ;;
  flair-phantoms) shipped_with_phantoms mdgru_flair mdgru_flair_phantoms 1200 --inputs FLAIR ;;
  # The FLAIR+T1w model of two releases ago: flair-phantoms widened to take the T1w too (its
  # weights start at zero: the model begins as the FLAIR model) and trained with synthetic
  # FLAIR+T1w patches, both real cases and the training phantoms.
  flair-t1w) shipped_with_phantoms mdgru_flair_phantoms mdgru_flair_t1w 1200 --inputs FLAIR T1w ;;
  # Experiment (not shipped): a fold fine-tuned further with the tile-consistency term, so
  # its answer depends less on where inference's tiles fall (benchmarks/invariance.py).
  fold-c07-consistency|fold-c26-consistency)
      fold_with_phantoms _phantoms _consistency 400 --consistency "${CONSISTENCY:-30}" ;;
  # The keep-gate cap (--keep-max): the phantoms-stage models fine-tuned further with the
  # MD-GRU's keep gate capped, so the recurrent state fades along a sweep and the answer does
  # not depend on where inference's tiles fall (benchmarks/invariance.py). flair-keep (400
  # iterations further: flair-more) is the shipped FLAIR model, flair-t1w-keep (flair-keep
  # widened to take the T1w) the shipped FLAIR+T1w.
  fold-c07-keep|fold-c26-keep) fold_with_phantoms _phantoms _keep 1000 --keep-max "${KEEP:-0.7}" ;;
  flair-keep) shipped_with_phantoms mdgru_flair_phantoms mdgru_flair_keep 1000 --inputs FLAIR \
      --keep-max "${KEEP:-0.7}" ;;
  flair-t1w-keep) shipped_with_phantoms mdgru_flair_keep mdgru_flair_t1w_keep 1200 \
      --inputs FLAIR T1w --keep-max "${KEEP:-0.7}" ;;
  # 400 more capped iterations, as the ablation's control folds got (fold-c0X-recall with
  # RECALL=0.5: leave-one-out 0.480 / 0.430 -> 0.493 / 0.460). flair-more is the shipped FLAIR
  # model; flair-t1w-more is not shipped (its c07 volume moved 6.9 % with the tiles).
  flair-more) shipped_with_phantoms mdgru_flair_keep mdgru_flair_more 400 --inputs FLAIR \
      --keep-max "${KEEP:-0.7}" ;;
  flair-t1w-more) shipped_with_phantoms mdgru_flair_t1w_keep mdgru_flair_t1w_more 400 \
      --inputs FLAIR T1w --keep-max "${KEEP:-0.7}" ;;
  # Ablation (not shipped): the capped folds 400 iterations further with the loss's overlap
  # term weighing missed lesion voxels by RECALL (Tversky beta; 0.5, soft Dice, is the control).
  fold-c07-recall|fold-c26-recall) fold_with_phantoms _keep "_recall${RECALL:-0.7}" 400 \
      --keep-max "${KEEP:-0.7}" --recall-weight "${RECALL:-0.7}" ;;
  # The synthetic base fine-tuned with the cap, still nothing from any real case: the start of
  # a recipe that learns with the capped state from the beginning.
  base-keep) "$TRAIN" "$OUT/models/base_flair_keep.safetensors" --inputs FLAIR "${COMMON[@]}" \
          --init-model "$OUT/models/base_flair.safetensors" --keep-max "${KEEP:-0.7}" \
          --iterations "${ITERATIONS:-4000}" -w "$OUT/work-base-keep" --nprocs 2 ;;
  # The lesion threshold of a finished model, chosen on calibration phantoms and written
  # into its card; folds are calibrated the same way before they are scored.
  threshold) phantoms "$CALIBRATION" 23 2
      "$(dirname "$TRAIN")/python" "$(dirname "$0")/../benchmarks/choose_threshold.py" \
          --model "${2:?threshold needs a model file}" --phantom "$CALIBRATION" \
          --work "$OUT/work-threshold" --write-card ;;
  *) echo "unknown step $STEP" >&2; exit 64 ;;
esac
