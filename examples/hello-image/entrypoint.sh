#!/bin/sh
# The image ENTRYPOINT: runs before every group's command, then hands over to it.
echo "entrypoint: group=${FLY_PROCESS_GROUP:-?} machine=${FLY_MACHINE_ID:-?} user=$(id -un) in $(pwd)"
exec "$@"
