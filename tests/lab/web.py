#!/usr/bin/env python3
"""The traffic lab's web server (WAN namespace, port 80): what an IoT
device's or a cloud's web interface offers.

- every file under --directory, as `python3 -m http.server` serves it
  (the benign devices poll /status.json and download /firmware.bin);
- /admin/: HTTP Basic authentication (realm "lab-camera"); every password
  is refused with 401, so hydra's `http-get` module has something to guess;
- POST /login: a login form (user=…&pass=…) that answers 200 with
  "Login failed" for every password, as web UIs do (hydra `http-post-form`);
- GET /blob/SIZE: SIZE bytes (at most 512 MB) generated on the fly, for
  firmware/OTA downloads, software updates, pages and speed tests;
- GET /flaky?fail=PERCENT: 503 that often, else a small JSON document (HTTP
  polling with retries);
- PUT or POST /upload: reads and discards the body (Content-Length or
  chunked), answers with the byte count (cloud backups).

With --tls-port it also serves the same over HTTPS (--cert, --key).

No password is ever accepted: the lab measures the guessing, not a break-in.
Run: web.py --bind ADDR --port 80 --directory WWW [--tls-port 443 --cert C --key K]
"""
import argparse
import functools
import http.server
import os
import random
import ssl
import sys
import threading
import urllib.parse

MAX_BLOB = 512 << 20
# One random chunk, repeated: OTA images do not compress well, and generating
# fresh random bytes at 10 MB/s would cost the shared machine a core.
CHUNK = os.urandom(64 << 10)

LOGIN_FORM = b"""<!doctype html><title>lab-camera</title>
<form method=post action=/login><input name=user><input name=pass type=password><button>Log in</button></form>
"""


class Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "lab-camera/1.0"

    def refuse_basic(self):
        body = b"<!doctype html><title>401</title>Authorization required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="lab-camera"')
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def page(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def blob(self, size_text):
        try:
            size = int(size_text)
        except ValueError:
            self.send_error(400, "SIZE must be a whole number of bytes")
            return
        if not 0 <= size <= MAX_BLOB:
            self.send_error(400, "SIZE must be 0 to %d" % MAX_BLOB)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        left = size
        try:
            while left > 0:
                n = min(left, len(CHUNK))
                self.wfile.write(CHUNK[:n])
                left -= n
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass  # the client (curl --max-time, a killed profile) went away

    def flaky(self, query):
        try:
            fail = int(urllib.parse.parse_qs(query).get("fail", ["20"])[0])
        except ValueError:
            fail = 20
        if random.randrange(100) < fail:
            self.page(b"busy\n", status=503)
        else:
            body = b'{"ok":true,"state":"idle"}\n'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def upload(self):
        total = 0
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                while True:
                    line = self.rfile.readline(64)
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline(64)
                        break
                    while size > 0:
                        got = self.rfile.read(min(size, 1 << 16))
                        if not got:
                            return
                        size -= len(got)
                        total += len(got)
                    self.rfile.readline(64)
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    got = self.rfile.read(min(left, 1 << 16))
                    if not got:
                        return
                    left -= len(got)
                    total += len(got)
        except (ValueError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
            return
        self.page(b"stored %d bytes\n" % total)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path == "/admin" or path.startswith("/admin/"):
            # A credential, right or wrong, is refused just like none.
            self.refuse_basic()
        elif path == "/login":
            self.page(LOGIN_FORM)
        elif path.startswith("/blob/"):
            self.blob(path[len("/blob/"):])
        elif path == "/flaky":
            self.flaky(url.query)
        else:
            super().do_GET()

    def do_PUT(self):
        if urllib.parse.urlsplit(self.path).path == "/upload":
            self.upload()
        else:
            self.send_error(404)

    def do_HEAD(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/admin" or path.startswith("/admin/"):
            self.refuse_basic()
        else:
            super().do_HEAD()

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/upload":
            self.upload()
            return
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 4096)
        except ValueError:
            length = 0
        self.rfile.read(length)
        if path == "/login":
            self.page(b"<!doctype html><title>lab-camera</title>Login failed\n" + LOGIN_FORM)
        else:
            self.send_error(404)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--directory", required=True)
    p.add_argument("--tls-port", type=int)
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()
    handler = functools.partial(Handler, directory=a.directory)
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer.daemon_threads = True
    if a.tls_port:
        if not (a.cert and a.key):
            p.error("--tls-port needs --cert and --key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        tls = http.server.ThreadingHTTPServer((a.bind, a.tls_port), handler)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    with http.server.ThreadingHTTPServer((a.bind, a.port), handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    main()
