"""Checks the Kubernetes manifests (k8s/) without a cluster.

Run with the project's venv after tests/containers/k8s-tools.sh has installed the tools:

  .venv/bin/python tests/containers/k8s.py render k8s/overlays/local OUT.yaml
      kustomize (the one built into the pinned .venv/bin/kubectl) renders the overlay.
  .venv/bin/python tests/containers/k8s.py validate OUT.yaml
      every object is validated against the JSON schemas of the newest Kubernetes release
      that kubernetes-validate knows (chosen at run time: 1.37 with kubernetes-validate
      1.37.0), strictly: unknown fields, wrong types, missing required fields and kinds or
      apiVersions that release does not serve are errors. Workload selectors must also match
      their pod template's labels (the API server rejects them otherwise).
  .venv/bin/python tests/containers/k8s.py pods OUT.yaml --network NET --prefix PFX
      every Deployment running a flowsync image is started with `docker run -d` on network
      NET as its pod would be: image (never pulled), command/args (with $(VAR) expansion),
      env plus envFrom/valueFrom resolved from the rendered ConfigMaps and Secrets,
      workingDir, memory and CPU limits, the security context (user, read-only root,
      capabilities, no-new-privileges, runAsNonRoot as the kubelet checks it) and emptyDir
      volumes. Its httpGet probes are run inside the container with curl against the
      container's address on NET (the kubelet probes the pod IP, so a process listening on
      127.0.0.1 only fails), exec probes with docker exec, until each succeeds once, the
      container exits, or the deadline passes. A Deployment without any probe fails: a hung process would never be restarted.
      Containers are named PFX-<deployment> and always removed at the end.

Not checked: there is no API server, scheduler or kubelet. Probe timing (initialDelay,
period, thresholds, timeoutSeconds) is not enforced and nothing is asserted about time: a
probe only has to succeed once before the deadline; tcpSocket and grpc probes are listed
but not run. No Services, cluster DNS or Ingress routing (the caller puts stand-ins for
redis and mongo on the network under the host names the ConfigMap uses), no Service
environment variables (enableServiceLinks), no PersistentVolumeClaims or volumes other
than emptyDir, no HPA, PDB or rollout behaviour, no lifecycle hooks or init containers,
no admission control beyond the schemas and the selector check.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
POLL_SECONDS = 0.5
ATTEMPT_SECONDS = 10  # the most one probe attempt may take (timeoutSeconds is not enforced)
# Every container a `pods` run creates carries this label with a value unique to the run,
# so that exactly those are removed, even when interrupted in the middle of `docker run`.
RUN_LABEL = "flowsync.k8s-check.run"


class ManifestError(Exception):
    """Something in a manifest that a pod could not start with, or that is not emulated."""


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [obj for obj in yaml.safe_load_all(f) if obj]


def ref(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def namespace_of(obj: dict) -> str:
    return obj.get("metadata", {}).get("namespace", "default")


def kind_summary(objects: list[dict]) -> str:
    counts = collections.Counter(obj.get("kind", "?") for obj in objects)
    return f"{len(objects)} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------- render


def cmd_render(args: argparse.Namespace) -> int:
    if not KUBECTL.exists():
        sys.exit(f"{KUBECTL} is missing: run tests/containers/k8s-tools.sh first")
    result = subprocess.run([str(KUBECTL), "kustomize", args.overlay],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"kustomize failed for {args.overlay}:\n{result.stderr}", file=sys.stderr)
        return 1
    Path(args.out).write_text(result.stdout, encoding="utf-8")
    print(f"==> {args.overlay} -> {args.out}: {kind_summary(load(args.out))}")
    return 0


# -------------------------------------------------------------------------------- validate


def schema_problems(obj: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(object)"
        return [f"{path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def selector_problems(obj: dict) -> list[str]:
    """The API server rejects a workload whose selector does not match its template."""
    if obj.get("kind") not in WORKLOAD_KINDS or obj["kind"] in ("Job", "CronJob"):
        return []
    spec = obj.get("spec", {})
    wanted = spec.get("selector", {}).get("matchLabels", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    missing = {k: v for k, v in wanted.items() if labels.get(k) != v}
    return [f"spec.selector.matchLabels {missing} not in the template's labels"] if missing else []


def cmd_validate(args: argparse.Namespace) -> int:
    version = args.kubernetes_version or kubernetes_validate.latest_version()
    objects = load(args.rendered)
    if not objects:
        print(f"{args.rendered}: no objects", file=sys.stderr)
        return 1
    problems = []
    for obj in objects:
        try:
            found = schema_problems(obj, version) + selector_problems(obj)
        except VersionNotSupportedError:
            sys.exit(f"kubernetes-validate does not know Kubernetes {version}")
        problems += [f"{ref(obj)}: {p}" for p in found]
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if problems:
        print(f"==> {len(problems)} problem(s) in {len(objects)} objects for Kubernetes "
              f"{version} (strict)", file=sys.stderr)
        return 1
    print(f"==> {kind_summary(objects)}; all valid for Kubernetes {version} (strict schemas)")
    return 0


# ------------------------------------------------------------------------------------ pods


def docker(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


def is_flowsync_image(image: str) -> bool:
    """`flowsync`, `flowsync:local`, `ghcr.io/acme/flowsync@sha256:…` and the like."""
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0] == "flowsync"


def pod_spec(workload: dict) -> dict:
    return workload.get("spec", {}).get("template", {}).get("spec", {})


def images(workload: dict) -> list[str]:
    return [c.get("image", "?") for c in pod_spec(workload).get("containers", [])]


def the_container(workload: dict) -> dict:
    spec = pod_spec(workload)
    if spec.get("initContainers") or len(spec.get("containers", [])) != 1:
        raise ManifestError("only pods with exactly one container (no init containers) "
                            "are emulated")
    return spec["containers"][0]


# ------------------------------------------------------ environment (envFrom, env, valueFrom)


def config_data(objects: list[dict], kind: str, namespace: str, name: str) -> dict | None:
    """The string data of a ConfigMap or Secret, or None when there is none of that name."""
    for obj in objects:
        if obj.get("kind") == kind and obj["metadata"]["name"] == name \
                and namespace_of(obj) == namespace:
            data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
            if kind == "Secret":
                data = {k: decode_secret(v, f"Secret {namespace}/{name} key {k}")
                        for k, v in data.items()}
                data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
            return data
    return None


def decode_secret(value: str, what: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise ManifestError(f"{what} is not base64 of UTF-8 text: {e}") from None


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, $$ escapes a $."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([^)]+)\)", one, value)


def env_from(container: dict, objects: list[dict], namespace: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key not in source:
                continue
            name = source[key]["name"]
            data = config_data(objects, kind, namespace, name)
            if data is None:
                if source[key].get("optional"):
                    continue
                raise ManifestError(f"envFrom {kind} {namespace}/{name} does not exist")
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
    return env


def value_from(source: dict, objects: list[dict], namespace: str, pod_name: str) -> str | None:
    for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
        if key in source:
            ref_ = source[key]
            data = config_data(objects, kind, namespace, ref_["name"])
            if data is None or ref_["key"] not in data:
                if ref_.get("optional"):
                    return None
                raise ManifestError(f"{kind} {namespace}/{ref_['name']} has no key "
                                    f"{ref_['key']}")
            return data[ref_["key"]]
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    path = source.get("fieldRef", {}).get("fieldPath")
    if path in fields:
        return fields[path]
    raise ManifestError(f"valueFrom {source} is not emulated")


def container_env(container: dict, objects: list[dict], namespace: str,
                  pod_name: str) -> dict[str, str]:
    """envFrom first, then env (which wins), as the kubelet builds it."""
    env = env_from(container, objects, namespace)
    for var in container.get("env", []):
        if "valueFrom" in var:
            value = value_from(var["valueFrom"], objects, namespace, pod_name)
            if value is not None:
                env[var["name"]] = value
        else:
            env[var["name"]] = expand(str(var.get("value", "")), env)
    return env


# ---------------------------------------------------- limits, security context, volumes


def quantity(q: str | int | float) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "": 1,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(Ki|Mi|Gi|Ti|m|k|M|G|T)?", str(q))
    if not m:
        raise ManifestError(f"quantity {q!r} is not understood")
    return float(m.group(1)) * units[m.group(2) or ""]


def limit_args(container: dict) -> list[str]:
    limits = container.get("resources", {}).get("limits", {})
    argv = []
    if "memory" in limits:
        argv += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        argv += ["--cpus", f"{quantity(limits['cpu']):g}"]
    return argv


def image_user(image: str) -> str:
    result = docker("image", "inspect", "--format", "{{.Config.User}}", image)
    if result.returncode != 0:
        raise ManifestError(f"image {image} is not there (it is never pulled): "
                            f"{result.stderr.strip()}")
    return result.stdout.strip()


def check_non_root(image: str, user: int | None) -> None:
    """The kubelet's runAsNonRoot check: a root or non-numeric image user fails the pod."""
    if user is not None:
        if user == 0:
            raise ManifestError("runAsNonRoot with runAsUser 0")
        return
    name = image_user(image).split(":")[0]
    if name in ("", "root", "0"):
        raise ManifestError(f"runAsNonRoot but image {image} runs as root")
    if not name.isdigit():
        raise ManifestError(f"runAsNonRoot but image {image} has non-numeric user "
                            f"{name!r}: the kubelet cannot verify it (set runAsUser)")


def security_args(pod: dict, container: dict) -> list[str]:
    ctx = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    argv = []
    user, group = ctx.get("runAsUser"), ctx.get("runAsGroup")
    if group is not None and user is None:
        raise ManifestError("runAsGroup without runAsUser is not emulated")
    if user is not None:
        argv += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if ctx.get("runAsNonRoot"):
        check_non_root(container["image"], user)
    if ctx.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    if ctx.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if ctx.get("privileged"):
        argv.append("--privileged")
    caps = ctx.get("capabilities", {})
    argv += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
    argv += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
    return argv


def volume_args(pod: dict, container: dict) -> list[str]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    argv = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ManifestError(f"volumeMount {mount['name']} has no volume")
        if "emptyDir" not in volume:
            raise ManifestError(f"volume {mount['name']} is not an emptyDir: not emulated")
        argv += ["--mount", f"type=tmpfs,destination={mount['mountPath']}"]
    return argv


def run_argv(workload: dict, objects: list[dict], name: str, network: str,
             run_id: str) -> list[str]:
    """`docker run` arguments that start the workload's container as its pod would."""
    pod, container = pod_spec(workload), the_container(workload)
    env = container_env(container, objects, namespace_of(workload), name)
    argv = ["run", "-d", "--pull", "never", "--name", name, "--hostname", name,
            "--network", network, "--label", f"{RUN_LABEL}={run_id}"]
    argv += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    argv += limit_args(container) + security_args(pod, container) + volume_args(pod, container)
    if "workingDir" in container:
        argv += ["--workdir", container["workingDir"]]
    # command replaces the image's ENTRYPOINT and drops its CMD (docker does the same on
    # --entrypoint); args alone replace only CMD.
    command = [expand(str(c), env) for c in container.get("command", [])]
    args = [expand(str(a), env) for a in container.get("args", [])]
    if command:
        argv += ["--entrypoint", command[0]]
    return argv + [container["image"], *command[1:], *args]


# ------------------------------------------------------------------------------ probes


def probe_port(container: dict, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ManifestError(f"probe port {port!r} is not a named port of the container")


def probe_command(container: dict, probe: dict,
                  pod_ip: str) -> tuple[list[str], str] | None:
    """The command that runs a probe inside the container and a description of it, or None
    for probe types this check does not run."""
    if "httpGet" in probe:
        get = probe["httpGet"]
        scheme = get.get("scheme", "HTTP").lower()
        path = get.get("path", "/")
        # The kubelet connects to the pod IP (not loopback), so a process listening on
        # 127.0.0.1 only fails here as it would there.
        host, port = get.get("host", pod_ip), probe_port(container, get["port"])
        url = f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"
        # -f: like the kubelet, 2xx and 3xx (not followed) succeed, 4xx and 5xx fail.
        argv = ["curl", "-fsS", "-o", "/dev/null", "--max-time", str(ATTEMPT_SECONDS)]
        argv += ["-k"] if scheme == "https" else []
        for header in get.get("httpHeaders", []):
            argv += ["-H", f"{header['name']}: {header['value']}"]
        return argv + [url], f"GET {url}"
    if "exec" in probe:
        return probe["exec"]["command"], "exec " + " ".join(probe["exec"]["command"])
    return None


def pod_ip(name: str, network: str) -> str:
    """The container's address on the network (what the kubelet would probe: the pod IP)."""
    result = docker("inspect", "--format",
                    f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name)
    return result.stdout.strip() or "127.0.0.1"


def container_state(name: str) -> str | None:
    """None while the container runs, else how it ended."""
    result = docker("inspect", "--format",
                    "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}", name)
    if result.returncode != 0:
        return "container is gone"
    running, code, oom = result.stdout.split()
    if running == "true":
        return None
    return f"container exited with code {code}" + (" (OOM-killed)" if oom == "true" else "")


def wait_for_probe(name: str, command: list[str], deadline: float) -> str | None:
    """Runs the probe until it succeeds (None) or the deadline passes (the last error)."""
    while True:
        try:
            result = docker("exec", name, *command, timeout=ATTEMPT_SECONDS)
            if result.returncode == 0:
                return None
            error = (result.stderr.strip() or result.stdout.strip()
                     or f"exit code {result.returncode}")
        except subprocess.TimeoutExpired:
            error = f"docker exec did not return within {ATTEMPT_SECONDS} s"
        ended = container_state(name)
        if ended:
            return ended
        if time.monotonic() >= deadline:
            return f"no success before the deadline; last: {error}"
        time.sleep(POLL_SECONDS)


def check_probes(workload: dict, name: str, network: str, deadline: float) -> list[str]:
    """Runs every probe of the workload's container; returns the failures."""
    container = the_container(workload)
    probes = [(kind, container[kind]) for kind in PROBES if kind in container]
    if not probes:
        return [f"{ref(workload)}: no probes (a hung process would never be restarted)"]
    ended = container_state(name)
    if ended:
        return [f"{ref(workload)}: {ended}"]
    failures = []
    ip = pod_ip(name, network)
    for kind, probe in probes:
        try:
            found = probe_command(container, probe, ip)
        except ManifestError as e:
            failures.append(f"{ref(workload)} {kind}: {e}")
            continue
        if found is None:
            handler = [k for k in ("tcpSocket", "grpc") if k in probe] or ["unknown"]
            print(f"  skip {ref(workload)} {kind}: {handler[0]} probes are not run")
            continue
        command, what = found
        error = wait_for_probe(name, command, deadline)
        print(f"  {'ok  ' if error is None else 'FAIL'} {ref(workload)} {kind}: {what}"
              + (f": {error}" if error else ""))
        if error:
            failures.append(f"{ref(workload)} {kind} ({what}): {error}")
    ended = container_state(name)
    if ended and not any(f.endswith(ended) for f in failures):
        failures.append(f"{ref(workload)}: {ended}")
    return failures


def print_logs(name: str) -> None:
    result = subprocess.run(["docker", "logs", "--tail", "50", name],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(f"---- docker logs --tail 50 {name}")
    print(result.stdout.rstrip() or "(no output)")
    print("----")


# ---------------------------------------------------------------------- start and clean up


def split_workloads(objects: list[dict]) -> tuple[list[dict], list[dict]]:
    """(Deployments running a flowsync image, every other workload)."""
    workloads = [o for o in objects if o.get("kind") in WORKLOAD_KINDS]
    ours = [w for w in workloads
            if w["kind"] == "Deployment" and any(map(is_flowsync_image, images(w)))]
    return ours, [w for w in workloads if w not in ours]


def start(workload: dict, objects: list[dict], name: str, network: str,
          run_id: str) -> str | None:
    """Starts the container; returns None or why it could not be started."""
    try:
        argv = run_argv(workload, objects, name, network, run_id)
    except ManifestError as e:
        return str(e)
    result = docker(*argv)
    if result.returncode != 0:
        error = [line for line in result.stderr.splitlines()
                 if line.strip() and "docker run --help" not in line]
        return "docker run failed: " + " ".join(error)
    return None


def remove(run_id: str) -> None:
    """Removes exactly the containers this run created."""
    listed = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}")
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120)
        print(f"==> removed {len(ids)} container(s)")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_pods(args: argparse.Namespace) -> int:
    objects = load(args.rendered)
    ours, others = split_workloads(objects)
    for w in others:
        print(f"==> not started (not a flowsync Deployment): {ref(w)} ({', '.join(images(w))})")
    if not ours:
        print("no Deployment runs a flowsync image", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, interrupted)
    failures: list[str] = []
    running: list[tuple[dict, str]] = []
    run_id = f"{args.prefix}-{os.getpid()}-{time.time_ns()}"
    try:
        for workload in ours:
            name = f"{args.prefix}-{workload['metadata']['name']}"
            error = start(workload, objects, name, args.network, run_id)
            print(f"==> {ref(workload)}: " + (f"FAIL {error}" if error else f"started {name}"))
            if error:
                failures.append(f"{ref(workload)}: {error}")
            else:
                running.append((workload, name))
        deadline = time.monotonic() + args.deadline
        for workload, name in running:
            found = check_probes(workload, name, args.network, deadline)
            if found:
                print_logs(name)
            failures += found
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        remove(run_id)
    if failures:
        print(f"==> {len(failures)} failure(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"==> {len(running)} Deployment(s) started and answered their probes")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="kustomize an overlay into one YAML file")
    p.add_argument("overlay")
    p.add_argument("out")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("validate", help="strict schema validation of rendered objects")
    p.add_argument("rendered")
    p.add_argument("--kubernetes-version",
                   help="default: the newest kubernetes-validate knows "
                        f"({kubernetes_validate.latest_version()})")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("pods", help="start flowsync Deployments in docker, check probes")
    p.add_argument("rendered")
    p.add_argument("--network", required=True, help="docker network to start them on")
    p.add_argument("--prefix", required=True, help="container names are PREFIX-<deployment>")
    p.add_argument("--deadline", type=float, default=60,
                   help="seconds for all probes to answer (default 60)")
    p.set_defaults(func=cmd_pods)
    args = parser.parse_args()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
