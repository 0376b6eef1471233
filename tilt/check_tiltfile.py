"""Runs the Tiltfile without Tilt, for tests/tests/suite/delivery.rs.

    check_tiltfile.py REPO [TILT ARGS...]      e.g. --deps=external --build=docker

1. Starlark: the Tiltfile is executed by starlark-go, the interpreter Tilt
   embeds, with Tilt's settings (global reassignment, sets, recursion) and
   stand-ins for Tilt's functions that do nothing, so that the resolver and
   the interpreter judge it (undefined names, a load() inside a block...).
2. Behaviour: it is executed again with stand-ins that record what Tilt
   would be asked to do, `local()` really running its command (helm
   template) and YAML really decoded. The record is printed as JSON:
   {"objects", "resources", "local_resources", "images", "watched"}; a
   fail() or a failing command exits non-zero with its message.

Needs PyYAML and starlark-go (scripts/install-test-tools.sh).
"""

import json
import os
import re
import subprocess
import sys
import types

import starlark_go
import yaml

repo, tilt_args = sys.argv[1], sys.argv[2:]
os.chdir(repo)
source = open("Tiltfile").read()


def parse_args(args):
    parsed = {}
    for arg in args:
        match = re.fullmatch(r"--([a-z-]+)=(.*)", arg)
        if not match:
            sys.exit("arguments are --name=value, not %r" % arg)
        parsed[match.group(1)] = match.group(2)
    return parsed


config_args = parse_args(tilt_args)

# 1. The Starlark interpreter. Attribute access on Tilt's modules (config.,
# os.path.) becomes plain names; top-level load() statements are dropped
# (a nested one stays and is refused by the parser, as Tilt would).
STUBS = """
def _nothing(*args, **kwargs):
    return None
def config_define_string(name, args=False, usage=''):
    return None
def config_parse():
    return ARGS
def os_path_exists(path):
    return True
def local(command, quiet=False, **kwargs):
    return ''
def decode_yaml_stream(text):
    return []
def encode_yaml_stream(objects):
    return ''
k8s_yaml = _nothing
k8s_resource = _nothing
local_resource = _nothing
docker_build = _nothing
docker_build_with_restart = _nothing
watch_file = _nothing
def sync(source, target):
    return (source, target)
"""
starlark_source = re.sub(r"(?m)^load\(.*\)\s*$", "", source)
starlark_source = (
    starlark_source.replace("config.define_string", "config_define_string")
    .replace("config.parse", "config_parse")
    .replace("os.path.exists", "os_path_exists")
)
starlark_go.configure_starlark(allow_global_reassign=True, allow_set=True, allow_recursion=True)
interpreter = starlark_go.Starlark(globals={"ARGS": config_args})
try:
    interpreter.exec(STUBS, filename="stubs")
    interpreter.exec(starlark_source, filename="Tiltfile")
except starlark_go.StarlarkError as error:
    sys.exit("Starlark refuses the Tiltfile: %s" % error)

# 2. What the Tiltfile asks of Tilt.
record = {"objects": [], "resources": [], "local_resources": [], "images": [], "watched": []}


class Failed(Exception):
    pass


def fail(message):
    raise Failed(message)


def local(command, quiet=False, **kwargs):
    shell = isinstance(command, str)
    done = subprocess.run(command, shell=shell, capture_output=True, text=True)
    if done.returncode != 0:
        raise Failed("local(%r) failed: %s" % (command, done.stderr.strip()))
    return done.stdout


def decode_yaml_stream(text):
    return [o for o in yaml.safe_load_all(text) if o]


def encode_yaml_stream(objects):
    return yaml.safe_dump_all(objects)


def k8s_yaml(what):
    text = open(what).read() if os.path.exists(str(what)) and "\n" not in str(what) else what
    record["objects"].extend(decode_yaml_stream(text))


def k8s_resource(workload, port_forwards=None, resource_deps=None, labels=None, **kwargs):
    record["resources"].append(
        {"name": workload, "port_forwards": port_forwards or [], "resource_deps": resource_deps or []}
    )


def local_resource(name, cmd, deps=None, ignore=None, labels=None, **kwargs):
    record["local_resources"].append({"name": name, "cmd": cmd, "deps": deps or []})


def sync(source, target):
    return {"sync": [source, target]}


def docker_build(ref, context, dockerfile="Dockerfile", only=None, live_update=None, **kwargs):
    record["images"].append(
        {"ref": ref, "context": context, "dockerfile": dockerfile, "only": only or [],
         "live_update": live_update or [], "restart": None}
    )


def docker_build_with_restart(ref, context, entrypoint, live_update, **kwargs):
    docker_build(ref, context, live_update=live_update, **kwargs)
    record["images"][-1]["restart"] = entrypoint


def load(module, *names):
    if module != "ext://restart_process" or names != ("docker_build_with_restart",):
        raise Failed("unexpected load(%r, %r)" % (module, names))


def watch_file(path):
    record["watched"].append(path)


config = types.SimpleNamespace(
    define_string=lambda name, args=False, usage="": None, parse=lambda: dict(config_args)
)
scope = {
    name: value
    for name, value in globals().items()
    if name in {"fail", "local", "decode_yaml_stream", "encode_yaml_stream", "k8s_yaml",
                "k8s_resource", "local_resource", "sync", "docker_build",
                "docker_build_with_restart", "load", "watch_file", "config", "os"}
}
try:
    exec(compile(source, "Tiltfile", "exec"), scope)
except Failed as failure:
    sys.exit(str(failure))
json.dump(record, sys.stdout)
