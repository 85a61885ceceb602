#!/usr/bin/env python3
"""Writes images built from simple Dockerfiles into one docker-save archive, without
Docker, for `ctr images import` (hack/image.sh).

Usage: archive.py OUT.tar DOCKERFILE CONTEXT TAG [DOCKERFILE CONTEXT TAG ...]

Only what a FROM scratch image of copied files needs is understood: FROM scratch, COPY
SRC DST, USER, EXPOSE, ENTRYPOINT, CMD (JSON form), comments. Anything else is refused,
so that the archive never silently differs from what `docker build` makes of the file.
Files are stored owned by root, with their modes and mtime 0: the same inputs give the
same image digest.
"""

import hashlib
import io
import json
import os
import sys
import tarfile


def parse(dockerfile):
    steps = []
    for raw in open(dockerfile, encoding="utf-8"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        steps.append((word.upper(), rest.strip()))
    if not steps or steps[0] != ("FROM", "scratch"):
        sys.exit(f"{dockerfile}: only FROM scratch images are supported")
    return steps[1:]


def add_tree(tar, src, dst):
    """Adds src (a file or a directory's contents when src ends with /) at dst."""
    if os.path.isdir(src):
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = dst.rstrip("/") if rel == "." else os.path.join(dst.rstrip("/"), rel)
            if base:
                add_entry(tar, root, base)
            for name in sorted(files):
                add_entry(tar, os.path.join(root, name), os.path.join(base, name))
    else:
        target = os.path.join(dst, os.path.basename(src)) if dst.endswith("/") else dst
        add_entry(tar, src, target)


def add_entry(tar, path, name):
    info = tar.gettarinfo(path, arcname=name.lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isfile():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def build(dockerfile, context):
    """Returns (config, layer bytes) of the image the Dockerfile describes."""
    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for word, rest in parse(dockerfile):
            if word == "COPY":
                src, dst = rest.split()
                add_tree(tar, os.path.join(context, src), dst)
            elif word == "USER":
                config["User"] = rest
            elif word == "EXPOSE":
                config.setdefault("ExposedPorts", {})[rest if "/" in rest else rest + "/tcp"] = {}
            elif word in ("ENTRYPOINT", "CMD"):
                config[word.capitalize() if word == "CMD" else "Entrypoint"] = json.loads(rest)
            else:
                sys.exit(f"{dockerfile}: {word} is not supported here")
    data = layer.getvalue()
    image = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": os.path.basename(dockerfile)}],
    }
    return json.dumps(image, sort_keys=True).encode(), data


def main(args):
    if len(args) < 4 or (len(args) - 1) % 3:
        sys.exit(__doc__)
    out, images = args[0], [args[i : i + 3] for i in range(1, len(args), 3)]
    manifest = []
    with tarfile.open(out + ".tmp", "w") as archive:

        def put(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        for dockerfile, context, tag in images:
            config, layer = build(dockerfile, context)
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            layer_name = hashlib.sha256(layer).hexdigest() + "/layer.tar"
            put(config_name, config)
            put(layer_name, layer)
            manifest.append({"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]})
        put("manifest.json", json.dumps(manifest).encode())
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main(sys.argv[1:])
