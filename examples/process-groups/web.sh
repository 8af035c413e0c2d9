#!/bin/sh
# The `web` group: busybox httpd on $PORT (the service's internal_port) serving a page that
# says which machine answered, and /healthz for the service check.
mkdir -p www
cat > www/index.html <<JSON
{"greeting": "${GREETING}", "machine": "${FLY_MACHINE_ID}", "group": "${FLY_PROCESS_GROUP}", "region": "${FLY_REGION}", "private_ip": "${FLY_PRIVATE_IP}"}
JSON
echo ok > www/healthz
echo "web: listening on :${PORT}"
exec httpd -f -vv -p "${PORT}" -h www
