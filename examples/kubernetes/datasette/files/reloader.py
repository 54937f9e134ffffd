"""Runs a command (datasette) and restarts it on POST /reload.

    python3 reloader.py --listen 127.0.0.1:8002 -- datasette serve --immutable /data/sqlite/current/db.sqlite

datasette keeps its SQLite connections open for its whole life, so after an
aetherfs switch it would go on serving the version it opened. The sidecar's
on_switch hook POSTs here; the command is stopped (SIGTERM, then SIGKILL
after 10 s) and started again, which opens the new `current`. SIGTERM on the
reloader stops the command and exits.
"""
import http.server
import json
import signal
import subprocess
import sys
import threading

lock = threading.Lock()
child = None
restarts = 0


def start(argv):
    global child
    child = subprocess.Popen(argv)


def stop():
    if child and child.poll() is None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main():
    args = sys.argv[1:]
    listen = "127.0.0.1:8002"
    if args[:1] == ["--listen"]:
        listen, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    host, port = listen.rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            global restarts
            if self.path != "/reload":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                stop()
                start(args)
                restarts += 1
            print("reloader: restarted after %s" % body.decode(errors="replace"), flush=True)
            self.send_response(204)
            self.end_headers()

        def do_GET(self):
            alive = child is not None and child.poll() is None
            out = json.dumps({"restarts": restarts, "running": alive}).encode()
            self.send_response(200 if alive else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True

    def on_term(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with lock:
        start(args)
    try:
        server.serve_forever()
    finally:
        with lock:
            stop()


if __name__ == "__main__":
    main()
