#!/usr/bin/env python3
"""Serve several independent SCIM 2.0 tenants from one process, for tests and the demo.

Each tenant is a scim2-server WSGI application with its own in-memory
storage, mounted under ``/<tenant>``; its SCIM root is
``http://127.0.0.1:PORT/<tenant>/scim/v2`` (``/<tenant>/v2`` works too).

Authentication (every tenant requires it, except ServiceProviderConfig as RFC
7643 §5 allows): a JSON object, from ``--auth-file FILE`` or the environment
variable ``SCIM_AUTH``, keyed by tenant::

    {"idp":   "token-1",                               # one bearer token
     "slack": ["tok-a", "tok-b"],                      # several
     "jira":  {"bearer": ["t"], "basic": {"admin": "pw"},
               "clients": {"client-id": "client-secret"}}}

``clients`` enables ``POST /<tenant>/oauth2/token`` (grant_type
client_credentials, credentials as HTTP Basic or form fields) issuing bearer
tokens that expire after ``--token-ttl`` seconds.

Seeding many resources without one HTTP request per resource:

* ``--seed TENANT=FILE``: a JSON file ``{"Users": [...], "Groups": [...]}``
  (or a bare list of users) loaded straight into the storage at start;
* ``POST /_admin/<tenant>/seed`` with the same body, or
  ``{"generate": {"count": N, "prefix": "user", "startAt": 0}}`` to generate
  users ``prefix000000..`` with name and a primary work email server-side.
  Answers ``{"created": n, "seconds": s}``; ``"returnIds": true`` adds the ids.
* ``POST /_admin/<tenant>/reset`` empties the tenant.
* ``POST /_admin/<tenant>/stats`` answers the tenant's SCIM requests so far by
  method, ``{"requests": {"GET": n, ...}, "total": n}``; ``{"reset": true}``
  zeroes the counters after reading them.
The admin endpoints take the tenant's own credentials.

``--no-bulk TENANT`` / ``--no-etag TENANT`` take a capability away from a
tenant's ServiceProviderConfig (the server then refuses it), to test fallbacks.
``--cursor TENANT`` makes a tenant advertise and default to cursor pagination
(RFC 9865); ``--max-results N`` changes every tenant's ``filter.maxResults``.

When listening, one line ``SCIM_READY port=<port>`` is printed to stdout.
"""

import argparse
import base64
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import waitress
from scim2_models import AuthenticationScheme
from scim2_models import Bulk as BulkConfig
from scim2_models import ETag
from scim2_models import Group
from scim2_models import Pagination
from scim2_models import ScimProvider
from scim2_models import UnauthorizedException
from scim2_models import User
from scim2_server.applications.wsgi import TenantDispatcher
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.utils import load_default_resource_types
from scim2_server.utils import load_default_schemas
from scim2_server.utils import load_default_service_provider_config

from lifecycle import exit_on_stdin_eof

log = logging.getLogger("serve")

BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="OAuth Bearer Token",
    description="Bearer token (static, or from the tenant's client-credentials endpoint)",
)
BASIC = AuthenticationScheme(
    type=AuthenticationScheme.Type.httpbasic,
    name="HTTP Basic",
    description="HTTP Basic",
)


class TenantAuth:
    """The credentials one tenant accepts. Issued OAuth tokens expire."""

    def __init__(self, spec: Any, token_ttl: int):
        if isinstance(spec, str):
            spec = {"bearer": [spec]}
        elif isinstance(spec, list):
            spec = {"bearer": spec}
        self.bearer = set(spec.get("bearer", []))
        self.basic = dict(spec.get("basic", {}))
        self.clients = dict(spec.get("clients", {}))
        self.token_ttl = token_ttl
        self.issued: dict[str, float] = {}
        self.lock = threading.Lock()
        if not (self.bearer or self.basic or self.clients):
            raise ValueError("no credentials")

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            if value in self.bearer:
                return True
            with self.lock:
                expiry = self.issued.get(value)
            return expiry is not None and expiry > time.monotonic()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return user in self.basic and secrets.compare_digest(
                self.basic[user], password
            )
        return False

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self.lock:
            now = time.monotonic()
            self.issued = {t: e for t, e in self.issued.items() if e > now}
            self.issued[token] = now + self.token_ttl
        return token


class AuthenticatedApplication(WSGIApplication):
    """scim2-server's WSGI application behind the tenant's credentials."""

    def __init__(self, storage, provider, service, auth: TenantAuth):
        super().__init__(storage, provider, service)
        self.auth = auth

    def check_auth(self, request: ScimRequest) -> None:
        if not self.auth.accepts(request.header("Authorization")):
            raise UnauthorizedException(detail="Missing or invalid credentials")

    def finalize_response(self, request, response):
        response = super().finalize_response(request, response)
        if response.status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Bearer realm="scim"'
        return response


class Tenant:
    def __init__(self, name: str, storage: InMemoryStorage, app: WSGIApplication):
        self.name = name
        self.storage = storage
        self.app = app
        # SCIM requests answered, by method: the benchmarks count a client's requests here,
        # independently of the client's own counters.
        self.requests: dict[str, int] = {}
        self.requests_lock = threading.Lock()

    def count(self, method: str) -> None:
        with self.requests_lock:
            self.requests[method] = self.requests.get(method, 0) + 1

    def stats(self, reset: bool) -> dict[str, Any]:
        with self.requests_lock:
            counts = dict(self.requests)
            if reset:
                self.requests = {}
        return {"requests": counts, "total": sum(counts.values())}

    def resource_type(self, name: str):
        return self.app.service.get_resource_type(name)

    def seed(self, body: Any) -> dict[str, Any]:
        """Load resources straight into the storage, skipping HTTP and the request pipeline."""
        started = time.monotonic()
        if isinstance(body, list):
            body = {"Users": body}
        users = list(body.get("Users", []))
        gen = body.get("generate")
        if gen:
            users.extend(generate_users(gen))
        ids: list[str] = []
        user_type = self.resource_type("User")
        group_type = self.resource_type("Group")
        with self.storage.lock:
            for user in users:
                created = self.storage.create(user_type, User.model_validate(user))
                ids.append(created.id)
            for group in body.get("Groups", []):
                created = self.storage.create(group_type, Group.model_validate(group))
                ids.append(created.id)
        result: dict[str, Any] = {
            "created": len(ids),
            "seconds": round(time.monotonic() - started, 3),
        }
        if body.get("returnIds"):
            result["ids"] = ids
        return result

    def reset(self) -> None:
        with self.storage.lock:
            self.storage.resources = []


def generate_users(gen: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = gen.get("prefix", "user")
    start = int(gen.get("startAt", 0))
    domain = gen.get("domain", "example.com")
    users = []
    for i in range(start, start + int(gen["count"])):
        name = f"{prefix}{i:06d}"
        users.append(
            {
                "userName": name,
                "name": {"givenName": "Given", "familyName": f"Family{i}"},
                "emails": [
                    {"value": f"{name}@{domain}", "type": "work", "primary": True}
                ],
                "active": True,
            }
        )
    return users


def json_response(start_response, status: HTTPStatus, body: Any, headers=()):
    payload = json.dumps(body).encode()
    start_response(
        f"{status.value} {status.phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers],
    )
    return [payload]


def read_body(environ) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


class Server:
    """Routes /_admin/<tenant>/..., /<tenant>/oauth2/token and /<tenant>/scim/v2/... ."""

    def __init__(self, tenants: dict[str, Tenant], auths: dict[str, TenantAuth]):
        self.tenants = tenants
        self.auths = auths
        self.dispatcher = TenantDispatcher(lambda name: self._scim_app(name))

    def _scim_app(self, name: str):
        tenant = self.tenants.get(name)
        return tenant.app if tenant else None

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "_admin":
            return self.admin(environ, start_response, parts[1], parts[2])
        if len(parts) == 3 and parts[1:] == ["oauth2", "token"]:
            return self.token(environ, start_response, parts[0])
        # /<tenant>/scim/v2/...: mount the tenant's app at /<tenant>/scim, so that
        # scim2-server (which strips an optional /v2) builds meta.location URLs there.
        if parts[0] in self.tenants:
            self.tenants[parts[0]].count(environ.get("REQUEST_METHOD", ""))
        if len(parts) >= 2 and parts[1] == "scim" and parts[0] in self.tenants:
            environ["SCRIPT_NAME"] = f"{environ.get('SCRIPT_NAME', '')}/{parts[0]}/scim"
            environ["PATH_INFO"] = "/" + "/".join(parts[2:])
            return self.tenants[parts[0]].app(environ, start_response)
        return self.dispatcher(environ, start_response)

    def admin(self, environ, start_response, tenant_name: str, action: str):
        tenant = self.tenants.get(tenant_name)
        if tenant is None:
            return json_response(start_response, HTTPStatus.NOT_FOUND, {"detail": "Unknown tenant"})
        if not self.auths[tenant_name].accepts(environ.get("HTTP_AUTHORIZATION")):
            return json_response(start_response, HTTPStatus.UNAUTHORIZED, {"detail": "Unauthorized"})
        if environ["REQUEST_METHOD"] != "POST":
            return json_response(start_response, HTTPStatus.METHOD_NOT_ALLOWED, {"detail": "POST only"})
        if action == "seed":
            try:
                body = json.loads(read_body(environ) or b"{}")
                result = tenant.seed(body)
            except Exception as exc:  # a bad seed is the caller's error; say why
                return json_response(start_response, HTTPStatus.BAD_REQUEST, {"detail": str(exc)})
            return json_response(start_response, HTTPStatus.OK, result)
        if action == "stats":
            body = json.loads(read_body(environ) or b"{}")
            return json_response(start_response, HTTPStatus.OK, tenant.stats(bool(body.get("reset"))))
        if action == "reset":
            tenant.reset()
            return json_response(start_response, HTTPStatus.OK, {"reset": True})
        return json_response(start_response, HTTPStatus.NOT_FOUND, {"detail": "Unknown action"})

    def token(self, environ, start_response, tenant_name: str):
        auth = self.auths.get(tenant_name)
        if auth is None or environ["REQUEST_METHOD"] != "POST":
            return json_response(start_response, HTTPStatus.NOT_FOUND, {"error": "not_found"})
        form = dict(parse_qsl(read_body(environ).decode()))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(value).decode().partition(":")
            except ValueError:
                client_id = None
        if form.get("grant_type") != "client_credentials":
            return json_response(start_response, HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type"})
        expected = auth.clients.get(client_id or "")
        if expected is None or not secrets.compare_digest(expected, client_secret or ""):
            return json_response(start_response, HTTPStatus.UNAUTHORIZED, {"error": "invalid_client"})
        body = {"access_token": auth.issue(), "token_type": "Bearer", "expires_in": auth.token_ttl}
        if form.get("scope"):
            body["scope"] = form["scope"]
        return json_response(start_response, HTTPStatus.OK, body)


def build_tenant(name: str, auth: TenantAuth, args, secret: str) -> Tenant:
    cursor, max_results = name in args.cursor, args.max_results
    config = load_default_service_provider_config()
    if name in args.no_bulk:
        config.bulk = BulkConfig(supported=False)
    if name in args.no_etag:
        config.etag = ETag(supported=False)
    if max_results is not None:
        config.filter.max_results = max_results
    if cursor:
        config.pagination = Pagination(
            cursor=True,
            index=True,
            default_pagination_method=Pagination.DefaultPaginationMethod.cursor,
            max_page_size=config.filter.max_results,
            cursor_timeout=3600,
        )
    schemes = []
    if auth.bearer or auth.clients:
        schemes.append(BEARER)
    if auth.basic:
        schemes.append(BASIC)
    config.authentication_schemes = schemes
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(),
        load_default_resource_types().values(),
        config=config,
    )
    storage = InMemoryStorage()
    service = ScimService(provider, secret=secret)
    return Tenant(name, storage, AuthenticatedApplication(storage, provider, service, auth))


def load_auth(args) -> dict[str, Any]:
    if args.auth_file:
        with open(args.auth_file) as f:
            return json.load(f)
    if os.environ.get("SCIM_AUTH"):
        return json.loads(os.environ["SCIM_AUTH"])
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tenants", nargs="+", metavar="TENANT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auth-file", help="JSON credentials by tenant (else $SCIM_AUTH)")
    parser.add_argument("--seed", action="append", default=[], metavar="TENANT=FILE")
    parser.add_argument("--cursor", action="append", default=[], metavar="TENANT")
    parser.add_argument("--no-bulk", action="append", default=[], metavar="TENANT",
                        help="advertise no Bulk support for TENANT")
    parser.add_argument("--no-etag", action="append", default=[], metavar="TENANT",
                        help="advertise no ETag support for TENANT")
    parser.add_argument("--max-results", type=int)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes, so a test process that dies takes the server along",
    )
    args = parser.parse_args()
    if args.exit_on_stdin_eof:
        exit_on_stdin_eof()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # "Task queue depth" warnings only say that all threads are busy, which tests do on purpose.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    raw_auth = load_auth(args)
    secret = os.environ.get("SCIM2_SERVER_SECRET") or secrets.token_urlsafe(32)
    tenants: dict[str, Tenant] = {}
    auths: dict[str, TenantAuth] = {}
    for name in args.tenants:
        if not TenantDispatcher.is_valid_tenant(name) or name in ("_admin", "scim"):
            parser.error(f"invalid tenant name {name!r}")
        if name not in raw_auth:
            parser.error(f"tenant {name!r} has no credentials (--auth-file or SCIM_AUTH)")
        try:
            auths[name] = TenantAuth(raw_auth[name], args.token_ttl)
        except ValueError as exc:
            parser.error(f"tenant {name!r}: {exc}")
        tenants[name] = build_tenant(name, auths[name], args, secret)
    for seed in args.seed:
        name, _, path = seed.partition("=")
        if name not in tenants:
            parser.error(f"--seed for unknown tenant {name!r}")
        with open(path) as f:
            result = tenants[name].seed(json.load(f))
        print(f"seeded {name}: {result['created']} in {result['seconds']}s", file=sys.stderr)

    server = waitress.create_server(
        Server(tenants, auths),
        host=args.host,
        port=args.port,
        threads=args.threads,
        ident="catalogsync-scim",
        # Big seed bodies and 1000-user pages; keep waitress from buffering to disk early.
        max_request_body_size=1 << 30,
        clear_untrusted_proxy_headers=True,
    )

    def stop(*_):
        server.close()
        # Skip interpreter teardown: freeing 100k resources takes seconds, and nothing needs flushing.
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"SCIM_READY port={server.effective_port}", flush=True)
    server.run()


if __name__ == "__main__":
    main()
