#!/bin/sh
# The `worker` group: drains jobs the web group queued.
trap 'echo "worker: stopping"; exit 0' TERM INT
echo "worker: watching ${QUEUE_DIR}"
while :; do
  for job in "${QUEUE_DIR}"/job-*; do
    [ -e "$job" ] || continue
    echo "worker: processed $(basename "$job") ($(cat "$job"))"
    rm -f "$job"
  done
  sleep 1
done
