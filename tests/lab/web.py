#!/usr/bin/env python3
"""The traffic lab's web server (WAN namespace, port 80): what an IoT
device's or a cloud's web interface offers.

- every file under --directory, as `python3 -m http.server` serves it
  (the benign devices poll /status.json and download /firmware.bin);
- /admin/: HTTP Basic authentication (realm "lab-camera"); every password
  is refused with 401, so hydra's `http-get` module has something to guess;
- POST /login: a login form (user=…&pass=…) that answers 200 with
  "Login failed" for every password, as web UIs do (hydra `http-post-form`).

No password is ever accepted: the lab measures the guessing, not a break-in.
Run: web.py --bind ADDR --port 80 --directory WWW
"""
import argparse
import functools
import http.server
import sys
import urllib.parse

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

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/admin" or path.startswith("/admin/"):
            # A credential, right or wrong, is refused just like none.
            self.refuse_basic()
        elif path == "/login":
            self.page(LOGIN_FORM)
        else:
            super().do_GET()

    def do_HEAD(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/admin" or path.startswith("/admin/"):
            self.refuse_basic()
        else:
            super().do_HEAD()

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
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
    a = p.parse_args()
    handler = functools.partial(Handler, directory=a.directory)
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    with http.server.ThreadingHTTPServer((a.bind, a.port), handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    main()
