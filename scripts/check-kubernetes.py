"""Checks deploy/kubernetes against the Kubernetes API schemas and against InferWire itself.

Every kustomization under the manifests directory is rendered with `kubectl kustomize` and
each object validated (strict: unknown fields are errors) against the OpenAPI schemas that
the kubernetes-validate package bundles, for the oldest and newest Kubernetes release the
manifests are meant for. Then the project's own rules: the flags passed to `inferwire serve`
exist in Sources/inferwire/Serve.swift, the probes use paths the HTTP listener serves
(Sources/InferWireServer/HTTPEndpoints.swift) on the port it listens on, the pod's grace
period covers preStop and the drain, the Services and the disruption budget select the
server's pods, every container runs as non-root with a read-only root filesystem, and the
Dockerfile agrees with the pods. A self-test then breaks a copy of the manifests in known
ways and requires each breakage to be caught, so that the checks cannot pass vacuously.

Prints one PASS or FAIL line per check and ends with
"Kubernetes manifest checks: N passed, N failed"; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import ipaddress
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import kubernetes_validate
import kubernetes_validate.utils
import yaml

# Each validation would otherwise reread and parse the 1.8 MB definitions file.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)

# The oldest release the manifests need (the preStop `sleep` action is on by default from
# 1.30) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Seconds the pod's grace period must leave after preStop and the drain for the exit itself.
GRACE_MARGIN = 5
# Seconds the startup probe must allow for a repository's models to load.
MIN_STARTUP_BUDGET = 60
MIN_REPLICAS = 3
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class CheckFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Facts read from the project's sources


@dataclass
class ServeOptions:
    """`inferwire serve`'s options (they take a value) and flags (they do not)."""

    options: dict[str, str | None]  # name -> default as written in Swift, if any
    flags: set[str]


def kebab(name: str) -> str:
    """ArgumentParser's long name for a property: maxFrameSize -> max-frame-size."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()


def read_serve_options(path: Path) -> ServeOptions:
    text = path.read_text()
    body = text.split("struct Serve", 1)[1].split("\n}\n", 1)[0]
    options: dict[str, str | None] = {}
    flags: set[str] = set()
    # An attribute (@Option(...) or @Flag(...), possibly over several lines), then `var x`.
    pattern = re.compile(
        r"@(Option|Flag)\b(\((?:[^()]|\([^()]*\))*\))?\s*var\s+(\w+)\s*(?::\s*[\w?<>\[\]]+)?\s*(?:=\s*([^\n]+))?"
    )
    declarations = pattern.findall(body)
    if len(declarations) != len(re.findall(r"@(?:Option|Flag)\b", body)):
        raise CheckFailed(f"{path}: could not read every @Option and @Flag of `serve` (the parser is out of date)")
    for kind, arguments, name, default in declarations:
        arguments = arguments or ""
        custom = re.search(r'\.customLong\("([^"]+)"', arguments)
        if "name:" in arguments and not custom and not re.search(r"\.(long|shortAndLong)\b", arguments):
            raise CheckFailed(f"{path}: `{name}` has no long name I can read ({' '.join(arguments.split())})")
        long = custom.group(1) if custom else kebab(name)
        if kind == "Flag":
            flags.add(long)
        else:
            options[long] = default.strip() if default else None
    if "repository" not in options or "http-port" not in options:
        raise CheckFailed(f"{path}: found no @Option declarations of `serve` (the parser is out of date)")
    return ServeOptions(options, flags)


def read_http_paths(path: Path) -> set[str]:
    match = re.search(r"static let paths: Set<String> = \[(.*?)\]", path.read_text(), re.S)
    if not match:
        raise CheckFailed(f"{path}: found no `static let paths` (the parser is out of date)")
    return set(re.findall(r'"([^"]+)"', match.group(1)))


def read_blas_candidates(path: Path) -> list[str]:
    match = re.search(r"static let candidates = \[(.*?)\]", path.read_text(), re.S)
    if not match:
        raise CheckFailed(f"{path}: found no `static let candidates` (the parser is out of date)")
    return re.findall(r'"([^"]+)"', match.group(1))


@dataclass
class Dockerfile:
    stages: list[dict[str, Any]]  # each: from, name, lines

    @property
    def final(self) -> dict[str, Any]:
        return self.stages[-1]


def read_dockerfile(path: Path) -> Dockerfile:
    stages: list[dict[str, Any]] = []
    logical = re.sub(r"\\\n", " ", path.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            parts = rest.split()
            stages.append({"from": parts[0], "name": parts[2] if len(parts) > 2 else None, "lines": []})
        elif stages:
            stages[-1]["lines"].append((instruction.upper(), rest.strip()))
    if not stages:
        raise CheckFailed(f"{path}: no FROM")
    return Dockerfile(stages)


# ---------------------------------------------------------------------------------------
# Manifests


def load_yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def kustomization_references(path: Path) -> tuple[list[Path], list[Path]]:
    """The files a kustomization names: (resources, patches), directories left out."""
    data = yaml.safe_load(path.read_text()) or {}
    resources = [path.parent / r for r in data.get("resources", []) if (path.parent / r).is_file()]
    patches = [path.parent / p["path"] for p in data.get("patches", []) if isinstance(p, dict) and "path" in p]
    patches += [path.parent / p for p in data.get("patchesStrategicMerge", []) if isinstance(p, str)]
    return resources, patches


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj.get("spec", {}).get("template")
    return None


def containers_of(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", []) or []
    yield from pod_spec.get("containers", []) or []


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions) against labels."""
    if not selector:
        return False
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerContainer:
    """The container running `inferwire serve`, with its arguments parsed and expanded."""

    workload: dict[str, Any]
    pod_spec: dict[str, Any]
    container: dict[str, Any]
    arguments: dict[str, str | None] = field(default_factory=dict)  # --name -> value (None: a flag)
    raw: dict[str, str] = field(default_factory=dict)  # --name -> value before $(VAR) expansion
    errors: list[str] = field(default_factory=list)  # what is wrong with the arguments

    def value(self, name: str, options: ServeOptions) -> str | None:
        if name in self.arguments:
            return self.arguments[name]
        default = options.options.get(name)
        return default.strip('"') if default else None

    def port_named(self, port: Any) -> int | None:
        for p in self.container.get("ports", []) or []:
            if port == p.get("name") or port == p.get("containerPort"):
                return p.get("containerPort")
        return None


# ---------------------------------------------------------------------------------------
# The checks


@dataclass
class Context:
    repo: Path
    manifests: Path
    options: ServeOptions
    http_paths: set[str]
    blas_candidates: list[str]
    dockerfile: Dockerfile
    example_secrets: dict[str, dict[str, Any]]  # name -> Secret from *.example.yaml


@dataclass
class Rendering:
    label: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def config_maps(self) -> dict[str, dict[str, str]]:
        return {o["metadata"]["name"]: o.get("data") or {} for o in self.of_kind("ConfigMap")}


class Results:
    def __init__(self, quiet: bool = False) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.quiet = quiet

    def fail(self, name: str, message: str) -> None:
        self.failed.append((name, message))
        if not self.quiet:
            print(f"FAIL {name}: {message}")

    def run(self, name: str, check: Callable[[], str]) -> None:
        try:
            detail = check()
        except CheckFailed as error:
            self.fail(name, str(error))
        except Exception as error:  # a manifest too broken for the check to read
            self.fail(name, f"could not check ({type(error).__name__}: {error})")
        else:
            self.passed.append(name)
            if not self.quiet:
                print(f"PASS {name}: {detail}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def find_server(rendering: Rendering, ctx: Context) -> ServerContainer:
    found: list[ServerContainer] = []
    for obj in rendering.objects:
        template = pod_template(obj)
        if not template:
            continue
        for container in template["spec"].get("containers", []):
            args = container.get("args") or []
            command = container.get("command") or []
            # The image's entrypoint is inferwire, so `serve` leads the args (or ends the command).
            if command[-1:] == ["serve"] or (not command and args[:1] == ["serve"]):
                found.append(ServerContainer(obj, template["spec"], container))
    require(len(found) == 1, f"expected one container running `inferwire serve`, found {len(found)}")
    server = found[0]
    args = (server.container.get("command") or []) + (server.container.get("args") or [])
    args = args[args.index("serve") + 1 :]
    env, server.errors = expandable_environment(server.container, rendering)
    # Mistakes are collected for the "serve flags" check; the other checks go on with the rest.
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            server.errors.append(f"`serve` takes no positional argument, got {arg!r}")
            continue
        name, has_value, value = arg[2:].partition("=")
        if name in ctx.options.flags:
            if has_value:
                server.errors.append(f"--{name} is a flag and takes no value (got --{arg[2:]})")
            server.arguments[name] = None
        elif name in ctx.options.options:
            if not has_value:
                if i >= len(args) or args[i].startswith("--"):
                    server.errors.append(f"--{name} needs a value")
                    continue
                value = args[i]
                i += 1
            if name in server.arguments:
                server.errors.append(f"--{name} is given twice")
            server.raw[name] = value
            server.arguments[name] = expand(value, env, f"--{name}", server.errors)
        else:
            server.errors.append(f"`inferwire serve` has no option --{name} (Sources/inferwire/Serve.swift)")
    return server


def expandable_environment(container: dict[str, Any], rendering: Rendering) -> tuple[dict[str, str], list[str]]:
    """What $(VAR) in the container's args expands to, as the kubelet would expand it."""
    config_maps = rendering.config_maps()
    env: dict[str, str] = {}
    errors: list[str] = []
    for variable in container.get("env", []) or []:
        name = variable["name"]
        if "value" in variable:
            env[name] = str(variable["value"])
        elif (ref := variable.get("valueFrom", {}).get("configMapKeyRef")) is not None:
            data = config_maps.get(ref["name"])
            if data is None or ref["key"] not in data:
                if not ref.get("optional", False):
                    errors.append(f"env {name}: ConfigMap {ref['name']} has no key {ref['key']!r}")
                continue
            env[name] = str(data[ref["key"]])
        elif (ref := variable.get("valueFrom", {}).get("fieldRef")) is not None:
            env[name] = f"<{ref['fieldPath']}>"
        elif variable.get("valueFrom", {}).get("secretKeyRef") is not None:
            env[name] = "<secret>"
    return env, errors


def expand(value: str, env: dict[str, str], what: str, errors: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            # Unset, the kubelet leaves "$(NAME)" in place and the server gets it as is.
            errors.append(f"{what}: $({name}) is not defined in the container's env")
            return match.group(0)
        return env[name]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)


def check_schema(objects: list[tuple[str, dict[str, Any]]]) -> str:
    errors = []
    for where, obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                errors.append(f"{where} {name_of(obj)} (Kubernetes {version}): {path}: {error.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as error:
                errors.append(f"{where} {name_of(obj)}: {error.message}")
    require(not errors, "; ".join(errors))
    return f"{len(objects)} objects valid (strict) against Kubernetes {' and '.join(KUBERNETES_VERSIONS)}"


def check_flags(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    require(not server.errors, "; ".join(server.errors))
    require("repository" in server.arguments, "--repository is required")
    require("insecure" not in server.arguments, "--insecure: management must not be served without authentication")
    return f"{len(server.arguments)} arguments, all declared by Serve.swift: " + " ".join(
        f"--{k}" for k in server.arguments
    )


def check_listeners(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    details = []
    for listener, host_option, port_option in (
        ("inference", "host", "port"),
        ("HTTP", "http-host", "http-port"),
        ("management", "management-host", "management-port"),
    ):
        port = server.value(port_option, ctx.options)
        if port is None:  # no management listener of its own
            continue
        host = server.value(host_option, ctx.options) or ""
        require(
            not is_loopback(host), f"--{host_option} {host}: the {listener} listener must not bind loopback in a pod"
        )
        declared = [p.get("containerPort") for p in server.container.get("ports", []) or []]
        require(int(port) in declared, f"--{port_option} {port} is not among the containerPorts {declared}")
        details.append(f"{listener} {host}:{port}")
    # Where management is served: its own listener, or the inference port (as Serve.swift decides).
    exposed = (
        server.value("management-host", ctx.options)
        if "management-port" in server.arguments
        else server.value("host", ctx.options)
    )
    if "no-management" not in server.arguments and not is_loopback(exposed or ""):
        require(
            "token-file" in server.arguments or "jwt-keys" in server.arguments,
            f"management on {exposed} needs --token-file or --jwt-keys (Serve.swift refuses to start otherwise)",
        )
        details.append("management authenticated")
    return ", ".join(details) + " (each declared as a containerPort)"


def check_probes(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    http_port = int(server.value("http-port", ctx.options) or 0)
    require("no-http" not in server.arguments, "--no-http switches off the listener the probes need")
    wanted = {"livenessProbe": "live", "readinessProbe": "ready", "startupProbe": "live"}
    details = []
    for probe_name, kind in wanted.items():
        probe = server.container.get(probe_name)
        require(probe is not None, f"no {probe_name}")
        get = probe.get("httpGet")
        require(get is not None, f"{probe_name} is not an httpGet probe")
        path = get.get("path", "/")
        require(
            path in ctx.http_paths,
            f"{probe_name} path {path} is not served by the HTTP listener ({sorted(ctx.http_paths)})",
        )
        require(
            path.rsplit("/", 1)[-1] == kind, f"{probe_name} uses {path}; it should ask whether the server is {kind}"
        )
        port = server.port_named(get.get("port"))
        require(
            port == http_port, f"{probe_name} port {get.get('port')!r} is {port}, not the HTTP listener's {http_port}"
        )
        details.append(f"{probe_name} {path}:{port}")
    startup = server.container["startupProbe"]
    budget = startup.get("failureThreshold", 3) * startup.get("periodSeconds", 10)
    require(
        budget >= MIN_STARTUP_BUDGET, f"the startup probe allows {budget} s for models to load (< {MIN_STARTUP_BUDGET})"
    )
    return ", ".join(details) + f"; startup allows {budget} s"


def check_grace(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    pre_stop = (server.container.get("lifecycle") or {}).get("preStop")
    require(pre_stop is not None, "no preStop hook: endpoints would still route to a draining pod")
    if "sleep" in pre_stop:
        sleep = int(pre_stop["sleep"]["seconds"])
    else:
        command = (pre_stop.get("exec") or {}).get("command") or []
        require(
            len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep",
            f"preStop {pre_stop} is neither a sleep action nor `sleep N`",
        )
        sleep = int(command[1])
    require(sleep >= 1, "preStop sleeps no time")
    shutdown = int(server.value("shutdown-timeout", ctx.options) or 0)
    grace = server.pod_spec.get("terminationGracePeriodSeconds", 30)
    require(
        grace >= sleep + shutdown + GRACE_MARGIN,
        f"terminationGracePeriodSeconds {grace} < preStop {sleep} + --shutdown-timeout {shutdown} + {GRACE_MARGIN}",
    )
    return f"terminationGracePeriodSeconds {grace} ≥ preStop {sleep} + --shutdown-timeout {shutdown} + {GRACE_MARGIN}"


def check_rollout(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    workload = server.workload
    require(workload["kind"] == "Deployment", f"the server runs in a {workload['kind']}, not a Deployment")
    replicas = workload["spec"].get("replicas", 1)
    require(replicas >= MIN_REPLICAS, f"replicas {replicas} < {MIN_REPLICAS}")
    strategy = workload["spec"].get("strategy") or {}
    require(strategy.get("type", "RollingUpdate") == "RollingUpdate", f"strategy {strategy.get('type')}")
    rolling = strategy.get("rollingUpdate") or {}
    require(
        str(rolling.get("maxUnavailable", "25%")) in ("0", "0%"),
        f"maxUnavailable {rolling.get('maxUnavailable', '25%')} (want 0)",
    )
    surge = str(rolling.get("maxSurge", "25%"))
    require(surge not in ("0", "0%"), "maxSurge 0 with maxUnavailable 0 cannot roll")
    return f"{replicas} replicas, RollingUpdate maxUnavailable 0 maxSurge {surge}"


def check_identity_and_state(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    raw = server.raw.get("replica-name", "")
    require(
        raw.startswith("$(") and raw.endswith(")"), f"--replica-name {raw!r} should be $(VAR) from the downward API"
    )
    variable = raw[2:-1]
    entry = next((e for e in server.container.get("env", []) or [] if e["name"] == variable), None)
    require(entry is not None, f"--replica-name uses $({variable}), which the container does not define")
    field_path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
    require(field_path == "metadata.name", f"$({variable}) is {entry}, not the pod's name (fieldRef metadata.name)")

    state = server.arguments.get("state")
    mounts = {m["mountPath"]: m for m in server.container.get("volumeMounts", []) or []}
    repository = server.value("repository", ctx.options) or ""
    repository_mount = mount_holding(repository, mounts)
    require(repository_mount is not None, f"--repository {repository} is on no volume")
    if state is None:
        require(
            not repository_mount.get("readOnly"),
            "without --state the server writes its state file into the read-only repository",
        )
        return "--replica-name from metadata.name; state in the repository"
    match = re.fullmatch(r"etcd://([^/:]+):(\d+)/(.+)", state)
    require(match is not None, f"--state {state!r} is not etcd://HOST:PORT/PREFIX")
    host, port = match.group(1), int(match.group(2))
    detail = f"--replica-name from metadata.name; --state {state}"
    etcd_services = [
        s for s in rendering.of_kind("Service") if any(p.get("port") == 2379 for p in s["spec"].get("ports", []))
    ]
    if etcd_services:
        service_names = {s["metadata"]["name"] for s in etcd_services}
        require(
            host.split(".")[0] in service_names,
            f"--state names {host}, but this rendering's etcd Service is {sorted(service_names)}",
        )
        service = next(s for s in etcd_services if s["metadata"]["name"] == host.split(".")[0])
        require(any(p.get("port") == port for p in service["spec"]["ports"]), f"Service {host} has no port {port}")
        require(
            any(
                selects(service["spec"].get("selector"), (pod_template(w) or {}).get("metadata", {}).get("labels", {}))
                for w in rendering.objects
                if pod_template(w)
            ),
            f"Service {host} selects no pods",
        )
        detail += f", served by Service {host} in this rendering"
    else:
        detail += " (an etcd outside this rendering)"
    return detail


def mount_holding(path: str, mounts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for mount_path, mount in mounts.items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            if best is None or len(mount_path) > len(best["mountPath"]):
                best = mount
    return best


def check_volumes(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    mounts = {m["mountPath"]: m for m in server.container.get("volumeMounts", []) or []}
    volumes = {v["name"]: v for v in server.pod_spec.get("volumes", []) or []}
    repository = server.value("repository", ctx.options) or ""
    repository_mount = mount_holding(repository, mounts)
    require(repository_mount is not None, f"--repository {repository} is on no volume")
    require(repository_mount["name"] in volumes, f"volume {repository_mount['name']} is not defined")
    source = volumes[repository_mount["name"]]
    kinds = sorted(k for k in source if k != "name")
    details = [f"--repository on volume {repository_mount['name']} ({', '.join(kinds)})"]
    if "persistentVolumeClaim" in source:
        claim = source["persistentVolumeClaim"]["claimName"]
        pvc = next((p for p in rendering.of_kind("PersistentVolumeClaim") if p["metadata"]["name"] == claim), None)
        require(pvc is not None, f"PersistentVolumeClaim {claim} is not in this rendering")
        require(
            "ReadOnlyMany" in pvc["spec"].get("accessModes", [])
            or "ReadWriteMany" in pvc["spec"].get("accessModes", []),
            f"PersistentVolumeClaim {claim} has accessModes {pvc['spec'].get('accessModes')}: replicas on other nodes cannot mount it",
        )
        require(repository_mount.get("readOnly") is True, "the shared model volume should be mounted readOnly")
    if "emptyDir" in source:
        writers = [
            c["name"]
            for c in server.pod_spec.get("initContainers", []) or []
            if any(
                m["name"] == repository_mount["name"] and not m.get("readOnly") for m in c.get("volumeMounts", []) or []
            )
        ]
        require(writers, "the model repository is an emptyDir that no init container fills")
        details.append(f"filled by {', '.join(writers)}")
    for option in ("token-file", "jwt-keys", "tls-cert", "tls-key", "tls-client-ca"):
        path = server.arguments.get(option)
        if path is None:
            continue
        mount = mount_holding(path, mounts)
        require(mount is not None, f"--{option} {path} is on no volume")
        volume = volumes.get(mount["name"]) or {}
        require("secret" in volume, f"--{option} {path} is not from a Secret (volume {mount['name']})")
        secret_name = volume["secret"]["secretName"]
        key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
        for item in volume["secret"].get("items") or []:
            if item["path"] == key:
                key = item["key"]
        secret = next((s for s in rendering.of_kind("Secret") if s["metadata"]["name"] == secret_name), None)
        secret = secret or ctx.example_secrets.get(secret_name)
        require(secret is not None, f"Secret {secret_name} is neither rendered nor shown in a *.example.yaml")
        keys = set((secret.get("stringData") or {}) | (secret.get("data") or {}))
        require(key in keys, f"--{option} reads key {key!r}, but Secret {secret_name} has {sorted(keys)}")
        details.append(f"--{option} from Secret {secret_name} key {key}")
    # Secrets read through env: each rendered or shown by an example.
    for container in containers_of(server.pod_spec):
        for source_ref in container.get("envFrom", []) or []:
            if (ref := source_ref.get("secretRef")) is not None:
                name = ref["name"]
                require(
                    any(s["metadata"]["name"] == name for s in rendering.of_kind("Secret"))
                    or name in ctx.example_secrets,
                    f"container {container['name']} reads Secret {name}, which no *.example.yaml shows",
                )
                details.append(f"{container['name']} env from Secret {name}")
    return "; ".join(details)


def check_security(rendering: Rendering, ctx: Context) -> str:
    count = 0
    problems = []
    for obj in rendering.objects:
        template = pod_template(obj)
        if not template:
            continue
        pod = template["spec"].get("securityContext") or {}
        for container in containers_of(template["spec"]):
            where = f"{name_of(obj)} container {container['name']}"
            own = container.get("securityContext") or {}
            merged = {**pod, **own}
            if merged.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if merged.get("runAsUser") == 0:
                problems.append(f"{where}: runAsUser 0")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((own.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if (own.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: adds capabilities {own['capabilities']['add']}")
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problems.append(f"{where}: no {resource} {part}")
            count += 1
    require(count > 0, "no containers found")
    require(not problems, "; ".join(problems))
    server = find_server(rendering, ctx)
    user = {**(server.pod_spec.get("securityContext") or {}), **(server.container.get("securityContext") or {})}.get(
        "runAsUser"
    )
    image_user = dockerfile_user(ctx.dockerfile)
    require(user is None or user == image_user, f"the server runs as {user}, the image's USER is {image_user}")
    return f"{count} containers: non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, requests and limits"


def dockerfile_user(dockerfile: Dockerfile) -> int:
    users = [rest for instruction, rest in dockerfile.final["lines"] if instruction == "USER"]
    require(users, "the Dockerfile's final stage sets no USER")
    user = users[-1].split(":")[0]
    require(user.isdigit(), f"USER {users[-1]}: give a numeric UID so that runAsNonRoot can check it")
    require(int(user) != 0, "USER 0 is root")
    return int(user)


def check_spread(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    labels = server.workload["spec"]["template"]["metadata"].get("labels", {})
    for constraint in server.pod_spec.get("topologySpreadConstraints", []) or []:
        if constraint.get("topologyKey") == "kubernetes.io/hostname" and label_selector_matches(
            constraint.get("labelSelector"), labels
        ):
            return f"topologySpreadConstraints across kubernetes.io/hostname, maxSkew {constraint.get('maxSkew')} ({constraint.get('whenUnsatisfiable')})"
    anti = ((server.pod_spec.get("affinity") or {}).get("podAntiAffinity")) or {}
    terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) or [])
    terms += [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) or []]
    for term in terms:
        if term.get("topologyKey") == "kubernetes.io/hostname" and label_selector_matches(
            term.get("labelSelector"), labels
        ):
            return "podAntiAffinity across kubernetes.io/hostname"
    raise CheckFailed("neither a topology spread constraint nor pod anti-affinity spreads the replicas across nodes")


def check_services(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    server_labels = server.workload["spec"]["template"]["metadata"].get("labels", {})
    workloads = [w for w in rendering.objects if pod_template(w)]
    details = []
    headless = None
    cluster_ip = None
    for service in rendering.of_kind("Service"):
        spec = service["spec"]
        selected = [
            w for w in workloads if selects(spec.get("selector"), pod_template(w)["metadata"].get("labels", {}))
        ]
        require(len(selected) == 1, f"{name_of(service)} selects the pods of {len(selected)} workloads")
        target = selected[0]
        container_ports = {
            p.get("name"): p["containerPort"]
            for c in pod_template(target)["spec"]["containers"]
            for p in c.get("ports", []) or []
        }
        for port in spec.get("ports", []):
            target_port = port.get("targetPort", port["port"])
            require(
                target_port in container_ports or target_port in container_ports.values(),
                f"{name_of(service)} port {port['port']} targets {target_port!r}, which {name_of(target)} does not declare",
            )
        if target is server.workload:
            if spec.get("clusterIP") == "None":
                headless = service
            elif spec.get("type", "ClusterIP") == "ClusterIP":
                cluster_ip = service
    require(headless is not None, "no headless Service (clusterIP: None) selects the server's pods")
    require(
        headless["spec"].get("publishNotReadyAddresses") is not True,
        "the headless Service publishes pods that are not ready",
    )
    inference_port = int(server.value("port", ctx.options) or 0)
    ports = [
        p for p in headless["spec"]["ports"] if server.port_named(p.get("targetPort", p["port"])) == inference_port
    ]
    require(ports, f"the headless Service has no port to the inference listener ({inference_port})")
    details.append(
        f"headless {headless['metadata']['name']}:{ports[0]['port']} → {inference_port} selects {server_labels}"
    )
    require(cluster_ip is not None, "no ClusterIP Service selects the server's pods")
    details.append(
        f"ClusterIP {cluster_ip['metadata']['name']} ports {[p['port'] for p in cluster_ip['spec']['ports']]}"
    )
    return "; ".join(details) + "; every Service selects one workload and targets declared ports"


def check_disruption_budget(rendering: Rendering, ctx: Context) -> str:
    server = find_server(rendering, ctx)
    labels = server.workload["spec"]["template"]["metadata"].get("labels", {})
    replicas = server.workload["spec"].get("replicas", 1)
    budgets = [
        b for b in rendering.of_kind("PodDisruptionBudget") if label_selector_matches(b["spec"].get("selector"), labels)
    ]
    require(len(budgets) == 1, f"{len(budgets)} PodDisruptionBudgets select the server's pods (want 1)")
    spec = budgets[0]["spec"]
    if "minAvailable" in spec:
        minimum = spec["minAvailable"]
        require(isinstance(minimum, int), f"minAvailable {minimum!r}: give a count")
        require(
            2 <= minimum < replicas,
            f"minAvailable {minimum} with {replicas} replicas (want ≥ 2 and < replicas, or drains block)",
        )
        return f"minAvailable {minimum} of {replicas}: one voluntary eviction at a time"
    maximum = spec.get("maxUnavailable")
    require(maximum == 1, f"maxUnavailable {maximum!r} (want 1)")
    return f"maxUnavailable 1 of {replicas}"


def check_config_references(rendering: Rendering, ctx: Context) -> str:
    config_maps = rendering.config_maps()
    count = 0
    for obj in rendering.objects:
        template = pod_template(obj)
        if not template:
            continue
        for container in containers_of(template["spec"]):
            for variable in container.get("env", []) or []:
                ref = (variable.get("valueFrom") or {}).get("configMapKeyRef")
                if ref is None:
                    continue
                count += 1
                require(
                    ref["name"] in config_maps, f"{name_of(obj)} env {variable['name']}: no ConfigMap {ref['name']}"
                )
                require(
                    ref["key"] in config_maps[ref["name"]],
                    f"{name_of(obj)} env {variable['name']}: ConfigMap {ref['name']} has no key {ref['key']!r}",
                )
            for source in container.get("envFrom", []) or []:
                if (ref := source.get("configMapRef")) is not None:
                    count += 1
                    require(ref["name"] in config_maps, f"{name_of(obj)} envFrom: no ConfigMap {ref['name']}")
        for volume in template["spec"].get("volumes", []) or []:
            if "configMap" in volume:
                count += 1
                require(
                    volume["configMap"]["name"] in config_maps,
                    f"{name_of(obj)} volume {volume['name']}: no ConfigMap {volume['configMap']['name']}",
                )
    return f"{count} ConfigMap references resolve ({', '.join(sorted(config_maps))})"


def check_dockerfile(ctx: Context) -> str:
    dockerfile = ctx.dockerfile
    build = dockerfile.stages[0]
    require(
        re.fullmatch(r"swift:6\.\d+(\.\d+)?(-[a-z0-9]+)?", build["from"]) is not None,
        f"the build stage is FROM {build['from']}, not the official swift image of the 6.x line",
    )
    runs = " ".join(rest for instruction, rest in build["lines"] if instruction == "RUN")
    require(
        "swift build -c release" in runs and "--product inferwire" in runs,
        "the build stage does not build the release inferwire",
    )
    final = dockerfile.final
    require(
        not final["from"].startswith("swift:") or final["from"].endswith("-slim"),
        f"the runtime image is {final['from']}, a full toolchain",
    )
    user = dockerfile_user(dockerfile)
    exposed = {
        int(p.split("/")[0]) for instruction, rest in final["lines"] if instruction == "EXPOSE" for p in rest.split()
    }
    for option in ("port", "http-port"):
        default = int(ctx.options.options[option] or 0)
        require(default in exposed, f"EXPOSE {sorted(exposed)} lacks --{option}'s default {default}")
    entrypoint = [rest for instruction, rest in final["lines"] if instruction == "ENTRYPOINT"]
    require(entrypoint and "inferwire" in entrypoint[-1], "the final stage's ENTRYPOINT is not the inferwire binary")
    # The default command must start a server: known flags, and no unauthenticated management
    # beyond loopback (which Serve.swift refuses).
    commands = [rest for instruction, rest in final["lines"] if instruction == "CMD"]
    require(commands, "the final stage has no CMD")
    try:
        command = json.loads(commands[-1])
    except json.JSONDecodeError:
        raise CheckFailed(f"CMD {commands[-1]} is not in exec (JSON) form")
    require(command[:1] == ["serve"], f"CMD {command} does not run `serve`")
    arguments: dict[str, str | None] = {}
    rest = command[1:]
    while rest:
        name, has_value, value = rest.pop(0).removeprefix("--").partition("=")
        if name in ctx.options.flags:
            arguments[name] = None
        else:
            require(name in ctx.options.options, f"CMD passes --{name}, which `serve` does not have")
            arguments[name] = value if has_value else (rest.pop(0) if rest else None)
            require(arguments[name] is not None, f"CMD passes --{name} without a value")

    def setting(name: str) -> str:
        return arguments.get(name) or (ctx.options.options.get(name) or "").strip('"')

    management_host = setting("management-host") if "management-port" in arguments else setting("host")
    require(
        "no-management" in arguments
        or is_loopback(management_host)
        or "token-file" in arguments
        or "jwt-keys" in arguments
        or "insecure" in arguments,
        f"CMD serves management on {management_host} without credentials: the server would refuse to start",
    )
    final_runs = " ".join(rest for instruction, rest in final["lines"] if instruction == "RUN")
    # OpenBLAS is loaded with dlopen by one of these names; Debian's libopenblas0* provide the first.
    require(
        "libopenblas.so.0" in ctx.blas_candidates, f"BLAS.swift looks for {ctx.blas_candidates}, not libopenblas.so.0"
    )
    require(
        re.search(r"\blibopenblas0(-pthread|-openmp|-serial)?\b", final_runs) is not None,
        "the runtime stage installs no libopenblas0 package (libopenblas.so.0), so ONNX models could not load",
    )
    return f"build FROM {build['from']}, runtime FROM {final['from']}, USER {user}, EXPOSE {sorted(exposed)}, libopenblas.so.0 installed"


def check_examples(ctx: Context) -> str:
    details = []
    for name, secret in ctx.example_secrets.items():
        values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
        for key, value in values.items():
            text = str(value)
            require(
                re.search(r"\b[0-9a-fA-F]{64}\b", text) is None,
                f"example Secret {name} key {key} holds what looks like a real SHA-256 digest",
            )
            for line in text.splitlines():
                fields = line.split()
                if fields[:1] == ["token"]:
                    require(
                        len(fields) >= 4 and "REPLACE" in fields[1],
                        f"example Secret {name}: token line {line!r} is not an obvious placeholder",
                    )
            if re.search(r"(KEY|SECRET|TOKEN|PASSWORD)", key.upper()) and key != "tokens":
                require("REPLACE" in text, f"example Secret {name} key {key} is not an obvious placeholder")
        details.append(name)
    require(details, "no *.example.yaml Secret")
    return f"example Secrets hold placeholders only: {', '.join(details)}"


def check_inventory(ctx: Context, kustomizations: list[Path]) -> str:
    used: set[Path] = set()
    for kustomization in kustomizations:
        resources, patches = kustomization_references(kustomization)
        for path in resources + patches:
            require(
                path.is_file(), f"{kustomization.relative_to(ctx.manifests)} names {path.name}, which does not exist"
            )
            used.add(path.resolve())
    orphans = []
    for path in sorted(ctx.manifests.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        if path.resolve() not in used:
            orphans.append(str(path.relative_to(ctx.manifests)))
    require(not orphans, f"not used by any kustomization: {orphans}")
    return f"{len(kustomizations)} kustomizations; every manifest is used by one or is a *.example.yaml"


# ---------------------------------------------------------------------------------------


def rendering_checks() -> list[tuple[str, Callable[[Rendering, Context], str]]]:
    return [
        ("serve flags", check_flags),
        ("listeners", check_listeners),
        ("probes", check_probes),
        ("termination grace", check_grace),
        ("rollout", check_rollout),
        ("replica name and state", check_identity_and_state),
        ("volumes", check_volumes),
        ("security", check_security),
        ("spread", check_spread),
        ("services", check_services),
        ("disruption budget", check_disruption_budget),
        ("config references", check_config_references),
    ]


def run_all(repo: Path, manifests: Path, results: Results, dockerfile: Path | None = None) -> None:
    try:
        ctx = Context(
            repo=repo,
            manifests=manifests,
            options=read_serve_options(repo / "Sources/inferwire/Serve.swift"),
            http_paths=read_http_paths(repo / "Sources/InferWireServer/HTTPEndpoints.swift"),
            blas_candidates=read_blas_candidates(repo / "Sources/InferWireONNX/BLAS.swift"),
            dockerfile=read_dockerfile(dockerfile or repo / "Dockerfile"),
            example_secrets={},
        )
        for path in sorted(manifests.rglob("*.example.yaml")):
            for obj in load_yaml_documents(path):
                if obj.get("kind") == "Secret":
                    ctx.example_secrets[obj["metadata"]["name"]] = obj
    except (CheckFailed, OSError, yaml.YAMLError) as error:
        results.fail("sources", str(error))
        return
    kustomizations = sorted(manifests.rglob("kustomization.yaml"))
    results.run("inventory", lambda: check_inventory(ctx, kustomizations))
    results.run("dockerfile", lambda: check_dockerfile(ctx))
    results.run("example secrets", lambda: check_examples(ctx))
    examples = [
        (str(p.relative_to(manifests)), o)
        for p in sorted(manifests.rglob("*.example.yaml"))
        for o in load_yaml_documents(p)
    ]
    results.run("schema *.example.yaml", lambda: check_schema(examples))
    for kustomization in kustomizations:
        directory = kustomization.parent
        label = str(directory.relative_to(manifests)) if directory != manifests else "."
        if directory.name == "base" and directory.parent == manifests:
            continue  # rendered as it is by the top-level kustomization
        try:
            rendering = Rendering(label, render(directory))
        except CheckFailed as error:
            results.fail(f"[{label}] render", str(error))
            continue
        results.run(f"[{label}] schema", lambda: check_schema([(label, o) for o in rendering.objects]))
        for name, check in rendering_checks():
            results.run(f"[{label}] {name}", lambda check=check: check(rendering, ctx))


# ---------------------------------------------------------------------------------------
# Self-test: each breakage must be caught by the named check.


def edit_yaml(path: Path, change: Callable[[list[Any]], None]) -> None:
    documents = load_yaml_documents(path)
    change(documents)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def server_container(documents: list[Any]) -> dict[str, Any]:
    return documents[0]["spec"]["template"]["spec"]["containers"][0]


BREAKAGES: list[tuple[str, str, str, Callable[[list[Any]], None]]] = [
    (
        "grace period shorter than preStop + drain",
        "base/deployment.yaml",
        "termination grace",
        lambda d: d[0]["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 30),
    ),
    (
        "liveness probe on a path the server does not serve",
        "base/deployment.yaml",
        "probes",
        lambda d: server_container(d)["livenessProbe"]["httpGet"].__setitem__("path", "/healthz"),
    ),
    (
        "readiness probe on the inference port",
        "base/deployment.yaml",
        "probes",
        lambda d: server_container(d)["readinessProbe"]["httpGet"].__setitem__("port", "inferwire"),
    ),
    (
        "a flag `serve` does not have",
        "base/deployment.yaml",
        "serve flags",
        lambda d: server_container(d)["args"].append("--no-such-flag=1"),
    ),
    (
        "a value given to a flag",
        "base/deployment.yaml",
        "serve flags",
        lambda d: server_container(d)["args"].append("--no-metrics=true"),
    ),
    (
        "runAsNonRoot removed",
        "base/deployment.yaml",
        "security",
        lambda d: (
            d[0]["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
            server_container(d)["securityContext"].pop("runAsNonRoot"),
        ),
    ),
    (
        "root filesystem writable",
        "base/deployment.yaml",
        "security",
        lambda d: server_container(d)["securityContext"].__setitem__("readOnlyRootFilesystem", False),
    ),
    (
        "replica name not from the pod name",
        "base/deployment.yaml",
        "replica name and state",
        lambda d: server_container(d)["env"][0].__setitem__("valueFrom", {"fieldRef": {"fieldPath": "spec.nodeName"}}),
    ),
    (
        "maxUnavailable 1 in rollouts",
        "base/deployment.yaml",
        "rollout",
        lambda d: d[0]["spec"]["strategy"]["rollingUpdate"].__setitem__("maxUnavailable", 1),
    ),
    (
        "no spread across nodes",
        "base/deployment.yaml",
        "spread",
        lambda d: d[0]["spec"]["template"]["spec"].pop("topologySpreadConstraints"),
    ),
    (
        "headless Service selecting other pods",
        "base/service-headless.yaml",
        "services",
        lambda d: d[0]["spec"]["selector"].__setitem__("app.kubernetes.io/name", "not-inferwire"),
    ),
    (
        "headless Service publishing unready pods",
        "base/service-headless.yaml",
        "services",
        lambda d: d[0]["spec"].__setitem__("publishNotReadyAddresses", True),
    ),
    (
        "budget that blocks every drain",
        "base/pdb.yaml",
        "disruption budget",
        lambda d: d[0]["spec"].__setitem__("minAvailable", 3),
    ),
    (
        "ConfigMap without the state key",
        "base/configmap.yaml",
        "config references",
        lambda d: d[0]["data"].pop("state"),
    ),
    (
        "replicas not a number",
        "base/deployment.yaml",
        "schema",
        lambda d: d[0]["spec"].__setitem__("replicas", "three"),
    ),
    ("an unknown field", "base/pdb.yaml", "schema", lambda d: d[0]["spec"].__setitem__("minAvailible", 2)),
]


# The Dockerfile's breakages: (description, check, text replaced, replacement).
DOCKERFILE_BREAKAGES = [
    ("the image running as root", "dockerfile", "USER 65532:65532", "USER 0"),
    ("the image without OpenBLAS", "dockerfile", "libopenblas0-pthread", "libgomp1"),
    (
        "the image's default command serving management unauthenticated",
        "dockerfile",
        ', "--management-port", "8501"]',
        "]",
    ),
]


def self_test(repo: Path, manifests: Path, results: Results) -> None:
    def broken_copy(break_it: Callable[[Path, Path], None], check_name: str) -> str:
        with tempfile.TemporaryDirectory() as temporary:
            copy_root = Path(temporary) / "kubernetes"
            shutil.copytree(manifests, copy_root)
            # Only the top-level kustomization: the base is where every breakage is made.
            shutil.rmtree(copy_root / "overlays", ignore_errors=True)
            dockerfile = Path(temporary) / "Dockerfile"
            shutil.copy(repo / "Dockerfile", dockerfile)
            break_it(copy_root, dockerfile)
            broken = Results(quiet=True)
            run_all(repo, copy_root, broken, dockerfile=dockerfile)
            caught = [name for name, _ in broken.failed]
            require(check_name in caught, f"not caught by {check_name!r} (failures: {caught or 'none'})")
            return f"rejected by {check_name}: " + next(m for n, m in broken.failed if n == check_name)

    for description, relative, check_name, change in BREAKAGES:

        def break_manifest(root: Path, _: Path, relative: str = relative, change: Callable = change) -> None:
            edit_yaml(root / relative, change)

        results.run(
            f"self-test: {description}",
            lambda break_it=break_manifest, check_name=check_name: broken_copy(break_it, f"[.] {check_name}"),
        )
    for description, check_name, old, new in DOCKERFILE_BREAKAGES:

        def break_dockerfile(_: Path, dockerfile: Path, old: str = old, new: str = new) -> None:
            text = dockerfile.read_text()
            require(old in text, f"the Dockerfile no longer contains {old!r}; update the self-test")
            dockerfile.write_text(text.replace(old, new))

        results.run(
            f"self-test: {description}",
            lambda break_it=break_dockerfile, check_name=check_name: broken_copy(break_it, check_name),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--repo", type=Path, default=here, help="the InferWire checkout (default: this one)")
    parser.add_argument("--manifests", type=Path, help="default: <repo>/deploy/kubernetes")
    parser.add_argument("--no-self-test", action="store_true", help="skip breaking a copy of the manifests")
    arguments = parser.parse_args()
    repo = arguments.repo.resolve()
    manifests = (arguments.manifests or repo / "deploy/kubernetes").resolve()
    if shutil.which("kubectl") is None:
        print("FAIL kubectl: not found; it renders the kustomizations (`kubectl kustomize`, no cluster needed)")
        print("Kubernetes manifest checks: 0 passed, 1 failed")
        return 1
    results = Results()
    run_all(repo, manifests, results)
    if not arguments.no_self_test:
        self_test(repo, manifests, results)
    print(f"Kubernetes manifest checks: {len(results.passed)} passed, {len(results.failed)} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
