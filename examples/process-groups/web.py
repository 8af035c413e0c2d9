"""The `web` group: a tiny HTTP server on $PORT that enqueues a job per POST."""
import http.server
import json
import os
import time

PORT = int(os.environ.get("PORT", "8080"))
QUEUE = os.environ.get("QUEUE_DIR", "/tmp/hello-groups-queue")


class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self._send(200, {"ok": True})
        self._send(200, {
            "greeting": os.environ.get("GREETING", "hello"),
            "machine": os.environ.get("FLY_MACHINE_ID"),
            "group": os.environ.get("FLY_PROCESS_GROUP"),
            "region": os.environ.get("FLY_REGION"),
        })

    def do_POST(self):
        os.makedirs(QUEUE, exist_ok=True)
        name = os.path.join(QUEUE, f"job-{time.time_ns()}")
        with open(name, "w") as f:
            f.write(self.path)
        self._send(202, {"queued": os.path.basename(name)})

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


print(f"web: listening on 0.0.0.0:{PORT}", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
