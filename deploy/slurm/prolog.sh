#!/bin/bash
# Slurm Prolog (e.g. /etc/slurm/prolog.d/trueidle.sh): records which job holds each of its
# GPUs for `trueidle agent --job-mapping-dir /run/trueidle-jobs`. One file per GPU, named by
# its uuid (no doubt about index order), holding "JOBID UID": the format of dcgm-exporter's
# --hpc-job-mapping-dir and of Princeton jobstats' prolog. A hidden temporary file and mv
# make each change atomic; the agent ignores hidden names. Never fails the job.
DEST=${TRUEIDLE_JOB_MAPPING_DIR:-/run/trueidle-jobs}
mkdir -p -m 755 "$DEST" || exit 0
for i in ${SLURM_JOB_GPUS//,/ }; do
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$i") || continue
  tmp="$DEST/.$uuid.$SLURM_JOB_ID"
  echo "$SLURM_JOB_ID $SLURM_JOB_UID" > "$tmp" && mv -f "$tmp" "$DEST/$uuid"
done
exit 0
