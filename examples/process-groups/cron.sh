#!/bin/sh
# The `cron` group: a schedule loop that runs a job at the start of every minute.
trap 'echo "cron: stopping"; exit 0' TERM INT
echo "cron: started, running every minute"
while :; do
  now=$(date +%s)
  sleep $((60 - now % 60)) &
  wait $!
  echo "cron: $(date -u +%H:%M) job done"
done
