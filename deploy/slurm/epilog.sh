#!/bin/bash
# Slurm Epilog (e.g. /etc/slurm/epilog.d/trueidle.sh): the job's GPUs are free again; their
# files in the trueidle job mapping directory go (see prolog.sh). Never fails the job.
DEST=${TRUEIDLE_JOB_MAPPING_DIR:-/run/trueidle-jobs}
for i in ${SLURM_JOB_GPUS//,/ }; do
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$i") || continue
  rm -f "$DEST/$uuid"
done
exit 0
