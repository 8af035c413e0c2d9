#!/bin/sh
# The `worker` group: says it is alive every few seconds until stopped.
trap 'echo "worker: stopping"; exit 0' TERM INT
while :; do
  echo "worker: $GREETING"
  sleep 5
done
