#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a SCIM server, for retry tests.

Forwards every request to --upstream unchanged, except the ones it fails:

* the Nth requests listed in a plan (1-based, counting every proxied request),
  answered with a given status (429 carries Retry-After);
* or at random, with --rate-429 / --rate-5xx probabilities (seeded by --seed);
* "drop" instead of a status closes the connection without an answer,
  "badjson" answers 200 with truncated JSON, "emptypage" answers an empty
  ListResponse whose totalResults says there is more;
* "lost" forwards the request, lets the server apply it, then closes the
  connection without an answer; "lost502" answers 502 instead (a gateway that
  lost the answer): the faults that make a client guess. ``"rateLost"`` loses
  that share of write answers (POST, PUT, PATCH, DELETE) at random;
* with ``"rejectOrFilter": true``, any GET whose ``filter`` contains `` or ``
  (case-insensitive) is answered 400 scimType invalidFilter, like apps that
  support single-clause filters only.

With --tls-cert/--tls-key it serves HTTPS (for CA-pinning tests; gencert.py
makes a CA and a certificate for 127.0.0.1).

The plan can be changed at run time, so one proxy serves many tests:
``POST /_fault`` with JSON ``{"fail": {"3": 429, "4": 503, "7": "drop"},
"rate429": 0.1, "rate5xx": 0.0, "retryAfter": "1", "reset": true}``
(``reset`` zeroes the counters; the numbers in ``fail`` count from then), and
``GET /_fault`` returns ``{"requests": n, "injected": {"429": k, ...}}``.
Prints ``FAULTPROXY_READY port=<port>`` when listening.
"""

import argparse
import http.client
import json
import os
import random
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from lifecycle import exit_on_stdin_eof

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


class Plan:
    def __init__(self, rate429: float, rate5xx: float, retry_after: str, seed: int):
        self.lock = threading.Lock()
        self.fail: dict[int, int | str] = {}
        self.rate429 = rate429
        self.rate5xx = rate5xx
        self.retry_after = retry_after
        self.random = random.Random(seed)
        self.requests = 0
        self.injected: dict[str, int] = {}
        self.reject_or_filter = False
        self.rate_lost = 0.0

    def update(self, body: dict) -> None:
        with self.lock:
            if body.get("reset"):
                self.requests = 0
                self.injected = {}
                self.fail = {}
                self.rate429 = self.rate5xx = 0.0
                self.retry_after = "1"
                self.reject_or_filter = False
                self.rate_lost = 0.0
            if "fail" in body:
                self.fail = {int(k): v for k, v in body["fail"].items()}
            self.rate429 = float(body.get("rate429", self.rate429))
            self.rate5xx = float(body.get("rate5xx", self.rate5xx))
            self.retry_after = str(body.get("retryAfter", self.retry_after))
            self.reject_or_filter = bool(body.get("rejectOrFilter", self.reject_or_filter))
            self.rate_lost = float(body.get("rateLost", self.rate_lost))

    def rejects_filter(self, method: str, path: str) -> bool:
        """True (and counted) for a GET with an `or` filter while rejectOrFilter is on."""
        if method != "GET" or not self.reject_or_filter:
            return False
        filters = parse_qs(urlsplit(path).query).get("filter", [])
        if not any(" or " in f.lower() for f in filters):
            return False
        with self.lock:
            self.injected["invalidFilter"] = self.injected.get("invalidFilter", 0) + 1
        return True

    def decide(self, method: str) -> int | str | None:
        """Count a request and return the fault to inject, if any."""
        with self.lock:
            self.requests += 1
            fault = self.fail.get(self.requests)
            writes = method in ("POST", "PUT", "PATCH", "DELETE")
            if fault is None and writes and self.random.random() < self.rate_lost:
                fault = self.random.choice(["lost", "lost502"])
            if fault is None:
                draw = self.random.random()
                if draw < self.rate429:
                    fault = 429
                elif draw < self.rate429 + self.rate5xx:
                    fault = self.random.choice([500, 502, 503])
            if fault is not None:
                key = str(fault)
                self.injected[key] = self.injected.get(key, 0) + 1
            return fault

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "injected": dict(self.injected)}


def make_handler(upstream: str, plan: Plan):
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: tests read stdout for the ready line
            pass

        def send_json(self, status: int, body: dict, headers: dict | None = None):
            self.send_raw(status, json.dumps(body).encode(), headers)

        def send_raw(self, status: int, payload: bytes, headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/_fault"):
                if self.command == "POST":
                    plan.update(json.loads(body or b"{}"))
                return self.send_json(200, plan.stats())

            fault = plan.decide(self.command)
            if fault is None and plan.rejects_filter(self.command, self.path):
                return self.send_json(
                    400,
                    {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                     "status": "400", "scimType": "invalidFilter",
                     "detail": "or is not supported"},
                )  # fmt: skip
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "badjson":
                return self.send_raw(200, b'{"totalResults": 10, "Resources": [{"id": ')
            if fault == "emptypage":
                # A page contradicting its own totalResults.
                return self.send_json(
                    200,
                    {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                     "totalResults": 1000000, "itemsPerPage": 0, "startIndex": 1,
                     "Resources": []},
                )  # fmt: skip
            if fault is not None and fault not in ("lost", "lost502"):
                status = int(fault)
                headers = {"Retry-After": plan.retry_after} if status == 429 else {}
                return self.send_json(
                    status,
                    {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                     "status": str(status), "detail": "injected by faultproxy"},
                    headers,
                )  # fmt: skip

            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = target.netloc
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as exc:
                return self.send_json(502, {"status": "502", "detail": f"upstream: {exc}"})
            finally:
                conn.close()
            if fault == "lost":
                # Applied upstream; the answer never arrives.
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "lost502":
                return self.send_json(502, {"status": "502", "detail": "injected: answer lost"})
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--retry-after", default="1", help="seconds or an HTTP date")
    parser.add_argument("--fail", default="", help="N=STATUS,... e.g. 1=429,2=503,5=drop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes, so a test process that dies takes the server along",
    )
    args = parser.parse_args()
    if args.exit_on_stdin_eof:
        exit_on_stdin_eof()

    plan = Plan(args.rate_429, args.rate_5xx, args.retry_after, args.seed)
    if args.fail:
        plan.update({"fail": dict(item.split("=", 1) for item in args.fail.split(","))})
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.upstream, plan))
    server.daemon_threads = True
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"FAULTPROXY_READY port={server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
