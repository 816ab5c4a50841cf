#!/usr/bin/env bash
# The container for real: builds the CPU image with podman on a debootstrapped Debian base, then
# runs mdgru-bids in it as a compute node would: the image's non-root user, no network, the
# dataset bound read-only, outputs and work in bound folders. Checks the derivatives, --version,
# the exit code of a bad call and that nothing was written outside the bound folders.
#
# Slow (debootstrap, wheels, image build, a participant run), so it is `make container-test`,
# not part of `make test`. Needs root, podman, runc and debootstrap (Debian packages) and the
# Debian mirror; pip takes every wheel from ./wheelhouse, made here with the host's pip, so the
# image build itself needs neither PyPI nor the PyTorch index.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${CONTAINER_TEST_DIR:-$ROOT/build/container-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/debian-minbase:bookworm
IMAGE=localhost/mdgru-bids:test-cpu
# crun fails where the host's cgroups are in hybrid mode; runc works
PODMAN=(podman --runtime runc)
# podman's default limits are above what runc may set here ("error setting rlimit")
LIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
TORCH=$(sed -n 's/^TORCH ?= //p' Makefile)
VALIDATOR=$(sed -n 's/^ARG BIDS_VALIDATOR_VERSION=//p' Dockerfile)
WHEELS="--no-index --find-links /src/wheelhouse"

for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install podman runc debootstrap"; exit 2; }
done
step() { echo "== $* ($(date +%T))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$WORK"
SECONDS=0

if ! podman image exists "$BASE"; then
    step "debootstrap Debian bookworm (minbase + python3)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$WORK/rootfs" "$MIRROR" \
        >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$WORK/rootfs"
fi
echo "base ready after ${SECONDS}s"

step "wheels for $TORCH (CPU), mdgru-bids and its dependencies"
"$PY" -m pip wheel -q -w wheelhouse "$TORCH" "setuptools>=68" wheel . "bids-validator-deno==$VALIDATOR" \
    >"$WORK/wheels.log" 2>&1 || { tail -20 "$WORK/wheels.log"; fail "pip wheel"; }
echo "wheels ready after ${SECONDS}s"

step "build $IMAGE"
start=$SECONDS
"${PODMAN[@]}" build -q --format docker --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_SOURCE="$WHEELS" \
    --build-arg PIP_SOURCE="$WHEELS" --build-arg TEMPLATE= --build-arg REVISION="$(git rev-parse HEAD)" \
    -t "$IMAGE" . >/dev/null
echo "image built in $((SECONDS - start))s, $(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"

step "a phantom dataset (1 participant, 2 sessions, 3 mm)"
rm -rf "$WORK/bids" "$WORK/out" "$WORK/work"
"$PY" -m mdgru_bids.cli.phantom "$WORK/bids" --participants 1 --sessions 2 --seed 0 --resolution 3 >/dev/null
mkdir -p "$WORK/out" "$WORK/work"
chown 1001:1001 "$WORK/out" "$WORK/work"  # the image's user
BINDS=(-v "$WORK/bids:/data:ro" -v "$WORK/out:/out" -v "$WORK/work:/work" --tmpfs /tmp)
run() { "${PODMAN[@]}" run --rm --network none "${LIMITS[@]}" "${BINDS[@]}" "$IMAGE" "$@"; }

step "--version and a bad call"
version=$(run --version)
[ "$version" = "mdgru-bids $("$PY" -c 'import mdgru_bids; print(mdgru_bids.__version__)')" ] \
    || fail "--version printed '$version'"
code=0; run /data /out participant --nprocs 0 2>"$WORK/bad.err" || code=$?
[ "$code" = 64 ] || fail "a usage error exited $code, not 64: $(cat "$WORK/bad.err")"
code=0; run /nowhere /out participant -w /work 2>"$WORK/bad.err" || code=$?
[ "$code" = 66 ] || fail "a missing BIDS_DIR exited $code, not 66: $(cat "$WORK/bad.err")"

step "participant level, no network, as user 1001"
start=$SECONDS
# a named container, kept until `podman diff` has listed what it wrote into the image
podman rm -f mdgru-bids-test >/dev/null 2>&1 || true
"${PODMAN[@]}" run --name mdgru-bids-test --network none "${LIMITS[@]}" "${BINDS[@]}" "$IMAGE" \
    /data /out participant -w /work --nprocs 2 --omp-nthreads 1 --template-resolution 2 \
    >"$WORK/participant.log" 2>&1 || { tail -20 "$WORK/participant.log"; podman rm -f mdgru-bids-test >/dev/null; fail "participant level"; }
echo "participant level took $((SECONDS - start))s"
# all but the mount points podman made: the binds, and /etc for its hosts and hostname files
changed=$(podman diff mdgru-bids-test | grep -v -x -e "A /data" -e "A /out" -e "A /work" -e "C /etc" || true)
podman rm mdgru-bids-test >/dev/null
[ -z "$changed" ] || fail "the run wrote into the image: $changed"
grep -q "MNI152NLin2009cAsym is not in TEMPLATEFLOW_HOME" "$WORK/participant.log" \
    || fail "the fallback to the embedded template was not logged"

step "group level"
run /data /out group -w /work >"$WORK/group.log" 2>&1 || { tail -20 "$WORK/group.log"; fail "group level"; }

step "derivatives"
anat=$WORK/out/sub-01/ses-02/anat
for file in "$anat/sub-01_ses-02_label-lesion_mask.nii.gz" \
    "$anat/sub-01_ses-02_desc-lesionchange_dseg.nii.gz" \
    "$anat/sub-01_ses-02_space-MNI152NLin2009aSym_label-lesion_probseg.nii.gz" \
    "$WORK/out/sub-01/anat/sub-01_from-subject_to-MNI152NLin2009aSym_mode-image_xfm.h5" \
    "$WORK/out/group/space-MNI152NLin2009aSym_label-lesion_probseg.nii.gz" \
    "$WORK/out/sub-01.html" "$WORK/out/group.html"; do
    [ -s "$file" ] || fail "missing $file"
done
owners=$(find "$WORK/out" ! -uid 1001 | head -3)
[ -z "$owners" ] || fail "not written by the image's user: $owners"
"$ROOT/.venv/bin/bids-validator-deno" "$WORK/out" >"$WORK/validator.log" 2>&1 \
    || { tail -20 "$WORK/validator.log"; fail "bids-validator-deno found errors in the outputs"; }
echo "container test passed in ${SECONDS}s: outputs in $WORK/out"
