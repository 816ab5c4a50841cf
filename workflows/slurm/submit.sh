#!/bin/bash
# Submit the participant array (one task per participant) and the group job, which starts
# only when every task succeeded and is cancelled if one fails.
#   BIDS_DIR=... OUTPUT_DIR=... WORK_DIR=... [MDGRU_BIDS_IMAGE=...] submit.sh [sbatch options]
# sbatch options (e.g. --account, --partition, --qos) go to both jobs. MDGRU_ARRAY_LIMIT=K
# runs at most K participants at once. SLURM logs go to OUTPUT_DIR/logs/slurm. Prints the
# two job ids.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${BIDS_DIR:?set BIDS_DIR to the input BIDS dataset}"
: "${OUTPUT_DIR:?set OUTPUT_DIR to the derivatives folder}"

count=$(bash "$here/participant_array.sbatch" --list | wc -l)
if [ "$count" -eq 0 ]; then
    echo "no participants (sub-* folders) in $BIDS_DIR" >&2
    exit 66
fi
logs="$OUTPUT_DIR/logs/slurm"
mkdir -p "$logs"

array=$(sbatch --parsable --array="1-$count${MDGRU_ARRAY_LIMIT:+%$MDGRU_ARRAY_LIMIT}" \
    --output="$logs/%x-%A_%a.log" "$@" "$here/participant_array.sbatch")
array=${array%%;*}
group=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="$logs/%x-%j.log" "$@" "$here/group.sbatch")
echo "${array} ${group%%;*}"
