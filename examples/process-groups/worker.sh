#!/bin/sh
# The `worker` group: a background loop on its own machine (a real app would take jobs from a
# queue service here; machines share no files).
trap 'echo "worker: stopping"; exit 0' TERM INT
echo "worker: watching for jobs"
n=0
while :; do
  sleep 10 &
  wait $!
  n=$((n + 1))
  echo "worker: idle for ${n}0s"
done
