"""Canaille (a lightweight IAM with a SCIM 2.0 server) for catalogsync's interop tests.

Run with the python of the venv `hack/scim/setup.sh hack/canaille/requirements.txt` makes.
In a fresh temporary directory: an SQLite database, `canaille install`, an OAuth client and
a bearer token whose value is $SCIM_TOKEN, then `canaille run` on 127.0.0.1 (loopback only).
Prints `CANAILLE_READY port=<n>` once the SCIM API answers; with --exit-on-stdin-eof it
stops (and removes its directory) when stdin closes, i.e. when the test process died.
"""

import argparse
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

READY_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    # A SIGTERM unwinds through `finally`, which stops the server and removes the directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    token = os.environ.get("SCIM_TOKEN")
    if not token:
        print("SCIM_TOKEN is required", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="catalogsync-canaille-")
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "SECRET_KEY": secrets.token_hex(16),
            "CANAILLE__DATABASE": "sql",
            "CANAILLE_SQL__DATABASE_URI": f"sqlite:///{workdir}/canaille.sqlite",
            "CANAILLE_SCIM__ENABLE_SERVER": "true",
            "CANAILLE_HYPERCORN__BIND": f"127.0.0.1:{port}",
        }
    )
    env.pop("SCIM_TOKEN", None)
    cli = os.path.join(os.path.dirname(sys.executable), "canaille")
    quiet = {"stderr": subprocess.DEVNULL}

    def canaille(*argv: str) -> dict:
        out = subprocess.run(
            [cli, *argv], env=env, cwd=workdir, check=True, stdout=subprocess.PIPE, **quiet
        ).stdout.decode()
        # The created model is printed as JSON (after any log lines).
        line = [l for l in out.splitlines() if l.startswith("{")]
        return json.loads(line[-1]) if line else {}

    server = None
    try:
        canaille("install")
        client = canaille(
            "create", "client", "--client-id", "catalogsync-tests",
            "--client-name", "catalogsync tests", "--grant-types", "client_credentials",
            "--token-endpoint-auth-method", "client_secret_basic",
            "--client-secret", secrets.token_hex(16), "--scope", "openid",
        )
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        canaille(
            "create", "token", "--token-id", "catalogsync-tests", "--access-token", token,
            "--client", client["id"], "--scope", "openid", "--issue-date", now,
            "--lifetime", str(30 * 24 * 3600), "--type", "access_token",
        )
        # Its own process group: hypercorn's worker processes outlive `canaille run` when
        # only it is stopped, so the whole group is (see `stop`).
        server = subprocess.Popen(
            [cli, "run"], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True, **quiet,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{port}/scim/v2/ServiceProviderConfig"
        while True:
            if server.poll() is not None:
                print(f"canaille run exited with {server.returncode}", file=sys.stderr)
                return 1
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("canaille did not answer in time", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"CANAILLE_READY port={port}", flush=True)
        if args.exit_on_stdin_eof:
            done = threading.Event()

            def watch():
                sys.stdin.read()
                done.set()

            threading.Thread(target=watch, daemon=True).start()
            while not done.is_set() and server.poll() is None:
                done.wait(0.5)
        else:
            server.wait()
        return 0
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(workdir, ignore_errors=True)


def stop(server: subprocess.Popen) -> None:
    """Stops `canaille run` and every process of its group (the workers ignore SIGTERM)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
