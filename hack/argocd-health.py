#!/usr/bin/env python3
"""Runs Argo CD resource health scripts (health.lua) the way Argo CD does, on Lua 5.1.

    argocd-health.py test DIR        every <group>/<Kind>/health.lua under DIR against
                                     its health_test.yaml, like Argo CD's TestLuaHealthScript
    argocd-health.py eval HEALTH.LUA the health of the object (JSON or YAML) on stdin,
                                     printed as JSON {"status": ..., "message": ...}

What it copies from Argo CD (util/lua/lua.go, gopher-lua, a Lua 5.1):
- the object is the global `obj`, converted from JSON: maps and lists become tables
  (lists 1-based), null becomes nil, timestamps stay strings;
- the sandbox of scripts from argocd-cm (useOpenLibs off): only the base, table and os
  libraries, so no string, math or io, and no string methods;
- the chunk must return a table; its `status` must be an Argo CD health status, else the
  result is Unknown "Lua returned an invalid health status"; a missing message is "".
Needs the `lupa` and `PyYAML` packages (hack/scim/requirements.txt).
"""

import json
import sys
from pathlib import Path

import yaml
from lupa import lua51

STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
INVALID = {"status": "Unknown", "message": "Lua returned an invalid health status"}


class _JsonLikeLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (sigs.k8s.io/yaml goes via JSON)."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str):
    return yaml.load(text, Loader=_JsonLikeLoader)


def sandbox() -> lua51.LuaRuntime:
    """A Lua 5.1 state with only what Argo CD opens for argocd-cm scripts."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(
        """
        debug.setmetatable("", nil)  -- no ("x"):sub(...): the string library is not opened
        local os_ = os
        os = {time = os_.time, date = os_.date, clock = os_.clock}
        string, math, io, debug, coroutine, python = nil, nil, nil, nil, nil, nil
        """
    )
    return lua


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(script: str, obj: dict) -> dict:
    """The health Argo CD computes for `obj` with `script`, as {"status", "message"}."""
    lua = sandbox()
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    if lua51.lua_type(result) != "table":
        raise ValueError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
    status, message = result["status"], result["message"]
    if status not in STATUSES:
        return dict(INVALID)
    return {"status": status, "message": message or ""}


def run_tests(root: Path) -> int:
    """Every case of every health_test.yaml under root; the number of failures."""
    failures, cases = 0, 0
    for script_path in sorted(root.rglob("health.lua")):
        folder = script_path.parent
        script = script_path.read_text()
        tests = load_yaml((folder / "health_test.yaml").read_text())["tests"]
        for case in tests:
            cases += 1
            name = f"{folder.relative_to(root)}/{case['inputPath']}"
            want = {"status": "", "message": "", **case["healthStatus"]}
            got = health(script, load_yaml((folder / case["inputPath"]).read_text()))
            if got == want:
                print(f"ok   {name}: {got['status']}")
            else:
                failures += 1
                print(f"FAIL {name}:\n  want {want}\n  got  {got}")
    if cases == 0:
        print(f"no health_test.yaml cases under {root}")
        return 1
    print(f"{cases} cases, {failures} failed")
    return failures


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "test":
        return 1 if run_tests(Path(argv[2])) else 0
    if len(argv) == 3 and argv[1] == "eval":
        obj = load_yaml(sys.stdin.read())
        print(json.dumps(health(Path(argv[2]).read_text(), obj)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
