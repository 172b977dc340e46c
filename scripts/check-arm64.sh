#!/usr/bin/env bash
# Run the torch-free device runtime on aarch64 (Debian bookworm, the base of Raspberry Pi OS 64-bit,
# Python 3.11) under qemu-user, and check it reranks a slate exactly as the x86_64 runtime does.
#
#   sudo scripts/check-arm64.sh [BUNDLE SLATE_DIR ROOT_JSON]
#
# BUNDLE is a signed bundle folder with a .tflite model, SLATE_DIR a `dir-cloud slate` folder
# (slate.json, history.jsonl), ROOT_JSON the signing repository's root metadata that the device trusts.
# Without them it uses `make demo`'s out/bundle, out/slate and out/repo, or makes a small signed run of
# its own under the work folder. Steps:
#   1. apt-get installs debootstrap and qemu-user-static if missing; registers qemu's aarch64 interpreter
#      with binfmt_misc (mounting /proc/sys/fs/binfmt_misc if needed);
#   2. debootstraps a bookworm arm64 root with python3-venv (cached in $ARM64_CACHE, reused while the
#      package list is unchanged; so is the venv of step 4 while the dependency wheels are the same);
#   3. on the host, `pip download`s the aarch64 cp311 wheels (manylinux up to glibc 2.36) of the base and
#      device-tflite dependencies, read from pyproject.toml, and builds this project's wheel;
#   4. in the root: a venv, `pip install --no-index` of those wheels, then `dir-device trust` of the root,
#      `dir-device install` (the TUF signature checked on aarch64),
#      `record --events`, `rerank`, and a check that torch is not installed;
#   5. the same three commands with the host's x86_64 runtime; the two rankings must list the same items
#      in the same order with scores within 1e-5.
# Needs root (debootstrap, chroot, binfmt_misc) and the Debian and PyPI registries.
# Environment: VENV (host venv with the project, default .venv), ARM64_CACHE (default
# /var/cache/dir-rerank/arm64), ARM64_MIRROR (default http://deb.debian.org/debian), KEEP_WORK=1 keeps
# the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${VENV:-.venv}
CACHE=${ARM64_CACHE:-/var/cache/dir-rerank/arm64}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
ROOT_PACKAGES=python3,python3-venv
MERGE=quota
TOLERANCE=1e-5

started=$(date +%s)
step() { echo "[check-arm64 +$(( $(date +%s) - started ))s] $*"; }
die() { echo "check-arm64: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, binfmt_misc); run it with sudo"
[ "$(uname -m)" = x86_64 ] || die "meant for an x86_64 host (uname -m: $(uname -m))"
HOST_PY=$VENV/bin/python
[ -x "$HOST_PY" ] || die "$HOST_PY not found: run \`make venv\` first, or set VENV"

# 1. Tools and the aarch64 interpreter.
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
    step "installing debootstrap and qemu-user-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q debootstrap qemu-user-static binfmt-support
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    update-binfmts --enable qemu-aarch64
fi
grep -qs '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "qemu-aarch64 is registered without the F flag, so it cannot run inside a chroot"

# 2. The arm64 root, cached per suite and package list.
ROOT=$CACHE/$SUITE-arm64-$(echo "$ROOT_PACKAGES" | sha256sum | cut -c1-12)
if [ ! -f "$ROOT/.complete" ]; then
    step "debootstrap $SUITE arm64 into $ROOT (first run on this machine)"
    rm -rf "$ROOT"
    mkdir -p "$CACHE"
    debootstrap --arch=arm64 --variant=minbase --include="$ROOT_PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || { tail -30 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
    touch "$ROOT/.complete"
else
    step "reusing the arm64 root $ROOT"
fi
[ "$(chroot "$ROOT" uname -m)" = aarch64 ] || die "the root does not run as aarch64"

# Work folder inside the root (so the chroot sees it); /proc and /dev mounted while we run. Not /sys:
# with the host's CPU list there, XNNPACK's cpuinfo crashes under qemu; without it, it only complains
# ("Error in cpuinfo: failed to parse the list of possible processors") and runs on one core.
WORK_NAME=check-$$
WORK=$ROOT/tmp/$WORK_NAME
IN=/tmp/$WORK_NAME
cleanup() {
    for mounted in proc dev; do umount "$ROOT/$mounted" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
mkdir -p "$WORK/wheels"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 "$@"; }

# The bundle and slate.
if [ $# -ge 3 ]; then
    BUNDLE=$1 SLATE=$2 ROOT_JSON=$3
elif [ -f out/bundle/manifest.json ] && [ -f out/slate/slate.json ] && [ -f out/repo/metadata/1.root.json ]; then
    BUNDLE=out/bundle SLATE=out/slate ROOT_JSON=out/repo/metadata/1.root.json
else
    step "no bundle given and no make demo output: training a small run"
    SMALL=$WORK/run
    (
        set -x
        "$VENV/bin/dir-cloud" synth --out "$SMALL/logs" --seed 0 --users 200 --force
        "$VENV/bin/dir-cloud" prepare --logs "$SMALL/logs" --out "$SMALL/data" --force
        "$VENV/bin/dir-cloud" train --data "$SMALL/data" --model dir --history device --epochs 1 --out "$SMALL/run"
        "$VENV/bin/dir-cloud" repo keys --out "$SMALL/keys"
        "$VENV/bin/dir-cloud" repo init --repo "$SMALL/repo" --root-key "$SMALL/keys/root.pem" --keys "$SMALL/keys"
        "$VENV/bin/dir-cloud" export --run "$SMALL/run" --out "$SMALL/bundle" --backends tflite --force \
            --repo "$SMALL/repo" --keys "$SMALL/keys"
        "$VENV/bin/dir-cloud" slate --run "$SMALL/run" --split test --row 0 --out "$SMALL/slate"
    ) >"$WORK/small-run.log" 2>&1 || { tail -30 "$WORK/small-run.log"; die "the small run failed"; }
    BUNDLE=$SMALL/bundle SLATE=$SMALL/slate ROOT_JSON=$SMALL/repo/metadata/1.root.json
fi
cp -r "$BUNDLE" "$WORK/bundle"
cp "$SLATE/slate.json" "$SLATE/history.jsonl" "$WORK/"
cp "$ROOT_JSON" "$WORK/root.json"

# 3. aarch64 wheels, downloaded on the host, and this project's wheel.
step "downloading the aarch64 cp311 wheels of the device-tflite extra"
mapfile -t REQUIREMENTS < <("$HOST_PY" - <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["device-tflite"]))
EOF
)
# Every manylinux tag bookworm's glibc 2.36 runs (pip does not widen a --platform tag by itself).
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
"$HOST_PY" -m pip download -q --dest "$WORK/wheels" --only-binary=:all: --implementation cp \
    --python-version 3.11 --abi cp311 --abi abi3 --abi none "${PLATFORMS[@]}" "${REQUIREMENTS[@]}" \
    2>"$WORK/pip.log" || { cat "$WORK/pip.log"; die "pip download of the aarch64 wheels failed"; }
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$WORK/wheels" "$REPO" \
    2>>"$WORK/pip.log" || { cat "$WORK/pip.log"; die "building this project's wheel failed"; }
ls "$WORK/wheels" | tr '\n' ' ' && echo

# 4. The device runtime on aarch64, in a venv kept per set of dependency wheels (pip under qemu is slow):
# a new set gets a fresh venv with everything installed from the wheels, a known one only this project's wheel.
DEPS_KEY=$(ls "$WORK/wheels" | grep -v '^dir_rerank-' | sha256sum | cut -c1-12)
PROJECT_WHEEL=$(cd "$WORK/wheels" && ls dir_rerank-*.whl)
VENV_IN=/opt/venv-$DEPS_KEY
if [ ! -f "$ROOT$VENV_IN/.complete" ]; then
    step "installing the wheels in a fresh venv inside the arm64 root"
    rm -rf "$ROOT"/opt/venv-*
    in_root /usr/bin/python3 -m venv "$VENV_IN"
    in_root "$VENV_IN/bin/pip" install -q --no-compile --no-index --find-links "$IN/wheels" "dir-rerank[device-tflite]"
    touch "$ROOT$VENV_IN/.complete"
else
    step "same dependency wheels as before: reinstalling only $PROJECT_WHEEL in $VENV_IN"
    in_root "$VENV_IN/bin/pip" install -q --no-compile --no-index --no-deps --force-reinstall "$IN/wheels/$PROJECT_WHEEL"
fi
in_root "$VENV_IN/bin/python" -c "
import importlib.util, platform, sys
assert platform.machine() == 'aarch64', platform.machine()
missing = [m for m in ('torch', 'executorch') if importlib.util.find_spec(m) is None]
assert missing == ['torch', 'executorch'], f'not torch-free: {missing}'
print(f'aarch64 Python {platform.python_version()}, no torch, no executorch')
"

# `dir-device` prints JSON; should it print text by default with a --json flag (on the subcommand or before
# it), the rerank gets that flag. Only the rerank's output is read.
run_device() {  # run_device DEVICE_BIN REGISTRY BUNDLE SLATE_DIR PREFIX...  (PREFIX: in_root or env)
    local bin=$1 root=$2 bundle=$3 slate=$4; shift 4
    local before=() after=()
    if [[ $("$@" "$bin" rerank --help) == *--json* ]]; then after=(--json)
    elif [[ $("$@" "$bin" --help) == *--json* ]]; then before=(--json); fi
    "$@" "$bin" trust "$slate/root.json" --root "$root" >/dev/null
    "$@" "$bin" install "$bundle" --root "$root" >/dev/null
    "$@" "$bin" record --events "$slate/history.jsonl" --root "$root" >/dev/null
    "$@" "$bin" "${before[@]}" rerank --slate "$slate/slate.json" --root "$root" --backend tflite --merge "$MERGE" \
        "${after[@]}"
}
step "dir-device install, record, rerank on aarch64"
run_device "$VENV_IN/bin/dir-device" "$IN/device-arm64" "$IN/bundle" "$IN" in_root >"$WORK/arm64.json"
step "the same on the host (x86_64)"
run_device "$VENV/bin/dir-device" "$WORK/device-x86" "$WORK/bundle" "$WORK" env >"$WORK/x86.json"

# 5. Same items, same order, same scores.
"$HOST_PY" - "$WORK/arm64.json" "$WORK/x86.json" "$TOLERANCE" <<'EOF'
import json, sys
arm, x86 = (json.load(open(p)) for p in sys.argv[1:3])
tolerance = float(sys.argv[3])
order = lambda r: [(i["source"], i["item_id"]) for i in r["items"]]
assert order(arm) == order(x86), f"order differs:\n  aarch64 {order(arm)}\n  x86_64  {order(x86)}"
diff = max(abs(a["score"] - b["score"]) for a, b in zip(arm["items"], x86["items"]))
assert diff <= tolerance, f"largest score difference {diff:.3g} > {tolerance}"
print(f"aarch64 ({arm['backend']}:{arm['delegate']}) and x86_64 ({x86['backend']}:{x86['delegate']}) agree: "
      f"{len(arm['items'])} items in the same order, largest score difference {diff:.2g}; "
      f"inference {arm['timings_ms'].get('inference', float('nan')):.2f} ms under qemu vs "
      f"{x86['timings_ms'].get('inference', float('nan')):.2f} ms native")
EOF
step "passed"
