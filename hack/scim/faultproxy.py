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
* ``"rateBadJson"``: that share of reads is answered "badjson";
  ``"rateGarbled"``: that share of writes is forwarded (applied) and its
  success answered 200 with the answer cut short ("garbled");
* ``"rateSlow"``: that share of forwarded answers sends its headers at once and
  its body in pieces over 0.2 to 2 seconds ("slow");
* ``"shift": {"rate": r, "users": "/app/scim/v2/Users", "deletable": [ids]}``:
  before that share of the list GETs of ``users`` past the first page, an
  account of nobody is created upstream ("shiftAdd"), one of ``deletable``
  listed on an earlier page is deleted ("shiftDelete"), or both (the total
  unchanged): index pages shift under the client. ``GET /_fault`` lists the
  ids under ``shifted``;
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
import time
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
        self.rate_bad_json = self.rate_garbled = 0.0
        self.rate_slow = 0.0
        self.shift: dict = {}
        self.shifted: dict[str, list[str]] = {"added": [], "removed": []}

    def update(self, body: dict) -> None:
        with self.lock:
            if body.get("reset"):
                self.requests = 0
                self.injected = {}
                self.fail = {}
                self.rate429 = self.rate5xx = 0.0
                self.retry_after = "1"
                self.reject_or_filter = False
                self.rate_lost = self.rate_bad_json = self.rate_garbled = self.rate_slow = 0.0
                self.shift = {}
                self.shifted = {"added": [], "removed": []}
            if "fail" in body:
                self.fail = {int(k): v for k, v in body["fail"].items()}
            self.rate429 = float(body.get("rate429", self.rate429))
            self.rate5xx = float(body.get("rate5xx", self.rate5xx))
            self.retry_after = str(body.get("retryAfter", self.retry_after))
            self.reject_or_filter = bool(body.get("rejectOrFilter", self.reject_or_filter))
            self.rate_lost = float(body.get("rateLost", self.rate_lost))
            self.rate_bad_json = float(body.get("rateBadJson", self.rate_bad_json))
            self.rate_garbled = float(body.get("rateGarbled", self.rate_garbled))
            self.rate_slow = float(body.get("rateSlow", self.rate_slow))
            self.shift = dict(body.get("shift", self.shift))

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
            if fault is None and self.random.random() < (
                self.rate_garbled if writes else self.rate_bad_json
            ):
                fault = "garbled" if writes else "badjson"
            if fault is not None and fault != "garbled":  # counted once garbled
                self.count(str(fault))
            return fault

    def count(self, kind: str) -> None:
        """Tallies one injected fault (the lock held)."""
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def slow(self) -> float:
        """Seconds over which to trickle a forwarded answer's body; 0 for at once."""
        with self.lock:
            if self.random.random() >= self.rate_slow:
                return 0.0
            self.count("slow")
            return self.random.uniform(0.2, 2.0)

    def garble(self, data: bytes) -> bytes:
        """An answer cut short: a proper prefix of a JSON object is never valid JSON."""
        with self.lock:
            self.count("garbled")
            return data[: self.random.randint(0, max(len(data) - 1, 0))] or b'{"id": '

    def shift_page(self, method: str, path: str) -> tuple[bool, bool, int]:
        """Whether to add and to delete an account before this list GET (counted), and
        the index of its page."""
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        start = int(query.get("startIndex", ["1"])[0])
        with self.lock:
            users = self.shift.get("users")
            if method != "GET" or parts.path != users or "filter" in query or start <= 1:
                return False, False, start
            if self.random.random() >= float(self.shift.get("rate", 0.0)):
                return False, False, start
            add, delete = self.random.choice([(True, False), (False, True), (True, True)])
            return add, delete, start

    def deletable(self, listed: list[str]) -> str | None:
        """One of the deletable ids among `listed`, taken off the list."""
        with self.lock:
            left = [i for i in listed if i in self.shift.get("deletable", [])]
            if not left:
                return None
            chosen = self.random.choice(left)
            self.shift["deletable"] = [i for i in self.shift["deletable"] if i != chosen]
            return chosen

    def shifted_id(self, kind: str, id_: str) -> None:
        """Notes an account the shift added or removed (counted)."""
        with self.lock:
            self.shifted[kind].append(id_)
            self.count("shiftAdd" if kind == "added" else "shiftDelete")

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "injected": dict(self.injected),
                    "shifted": {k: list(v) for k, v in self.shifted.items()}}  # fmt: skip


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

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                # The client went away (a killed engine): nothing to answer.
                self.close_connection = True

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
            if fault is not None and fault not in ("lost", "lost502", "garbled"):
                status = int(fault)
                headers = {"Retry-After": plan.retry_after} if status == 429 else {}
                return self.send_json(
                    status,
                    {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                     "status": str(status), "detail": "injected by faultproxy"},
                    headers,
                )  # fmt: skip

            self.shift_pages()
            try:
                resp, data = self.upstream(self.command, self.path, body)
            except OSError as exc:
                return self.send_json(502, {"status": "502", "detail": f"upstream: {exc}"})
            if fault == "lost":
                # Applied upstream; the answer never arrives.
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "lost502":
                return self.send_json(502, {"status": "502", "detail": "injected: answer lost"})
            if fault == "garbled" and 200 <= resp.status < 300:
                # Applied upstream; the answer cannot be parsed.
                return self.send_raw(200, plan.garble(data))
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.trickle(data, plan.slow())

        def upstream(self, method: str, path: str, body: bytes):
            """Sends a request upstream with the client's credentials; (answer, body)."""
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = target.netloc
                if body:
                    headers["Content-Type"] = "application/scim+json"
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                return resp, resp.read()
            finally:
                conn.close()

        def trickle(self, data: bytes, seconds: float):
            """Writes the body at once, or in pieces spread over `seconds` (a slow body)."""
            if not seconds:
                return self.wfile.write(data)
            pieces = 5
            size = max(1, -(-len(data) // pieces))
            for i in range(pieces):
                time.sleep(seconds / pieces)
                self.wfile.write(data[i * size : (i + 1) * size])
                self.wfile.flush()

        def shift_pages(self):
            """Before a page past the first: an account of nobody added upstream, and/or
            one listed on an earlier page deleted, so the pages shift under the client."""
            add, delete, start = plan.shift_page(self.command, self.path)
            users = urlsplit(self.path).path
            if add:
                n = random.getrandbits(32)
                user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": f"shift{n:08x}", "active": True,
                        "emails": [{"value": f"shift{n:08x}@elsewhere.example",
                                    "primary": True, "type": "work"}]}  # fmt: skip
                resp, data = self.upstream("POST", users, json.dumps(user).encode())
                if resp.status == 201:
                    plan.shifted_id("added", json.loads(data)["id"])
            if delete:
                query = f"?startIndex=1&count={start - 1}&attributes=id"
                resp, data = self.upstream("GET", users + query, b"")
                listed = [r["id"] for r in json.loads(data).get("Resources", [])]
                chosen = plan.deletable(listed)
                if chosen and self.upstream("DELETE", f"{users}/{chosen}", b"")[0].status == 204:
                    plan.shifted_id("removed", chosen)

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
