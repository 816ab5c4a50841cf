# mdgru-bids: MS lesion segmentation and change with MD-GRU, as a BIDS-App container.
#   docker build -t mdgru-bids:0.1.0 .
#   docker run --rm --gpus all --read-only --tmpfs /tmp -u "$(id -u):$(id -g)" \
#       -v /data/study:/data:ro -v /data/out:/out -v /scratch/work:/work \
#       mdgru-bids:0.1.0 /data /out participant -w /work
# Apptainer/Singularity: see Singularity.def and workflows/README.md.
#
# The CUDA base and the PyTorch wheel index must agree (cu128 wheels on a CUDA 12.8 base);
# the host needs an NVIDIA driver new enough for that CUDA (>= 570, or >= 525 with CUDA's
# minor-version compatibility).
#
# A CPU image from any Debian/Ubuntu base with python3 (tests/container_test.sh builds one on
# a debootstrapped Debian with podman, without Docker Hub or download.pytorch.org):
#   docker build --build-arg BASE_IMAGE=debian:bookworm \
#       --build-arg TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu" \
#       --build-arg TEMPLATE= -t mdgru-bids:0.1.0-cpu .
# TORCH_SOURCE and PIP_SOURCE are pip options: "--no-index --find-links /src/wheelhouse"
# installs from wheels put into ./wheelhouse beforehand (an offline build).
# TEMPLATE= (empty) fetches no TemplateFlow template: the app then uses its embedded one.

ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

# ---- build: a virtual environment with PyTorch (CUDA), mdgru-bids and the templates ----
FROM ${BASE_IMAGE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cu128"
ARG PIP_SOURCE=""
ARG BIDS_VALIDATOR_VERSION=3.0.2
ARG TEMPLATE=MNI152NLin2009cAsym

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow

# Ubuntu drops superseded package versions from its archive, so the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# The sources are pip options (word-split on purpose), not packages: hadolint takes them for
# unpinned packages.
# hadolint ignore=SC2086,DL3013
RUN python3 -m venv /opt/venv \
    && pip install "torch==$TORCH_VERSION" $TORCH_SOURCE \
    && pip install . "bids-validator-deno==$BIDS_VALIDATOR_VERSION" $PIP_SOURCE

# The files mdgru_bids.templates.resolve_template reads (T1w and brain mask at 1 mm), fetched
# now because compute nodes have no network; the second command fails the build if any is
# missing. With TEMPLATE empty the folder stays empty and the embedded template is used.
RUN mkdir -p "$TEMPLATEFLOW_HOME" && if [ -n "$TEMPLATE" ]; then \
    python3 -c "import templateflow.api as tf; \
tf.get('$TEMPLATE', resolution=1, desc=None, suffix='T1w', extension='.nii.gz'); \
tf.get('$TEMPLATE', resolution=1, desc='brain', suffix='mask', extension='.nii.gz')" \
    && python3 -c "from pathlib import Path; from mdgru_bids.templates import resolve_template; \
print(resolve_template('$TEMPLATE', Path('/tmp')))"; fi

# ---- runtime: the same base with Python, the environment and the templates, no build tree ----
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}

ARG BASE_IMAGE

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG BUILD_DATE=unknown

LABEL org.opencontainers.image.title="mdgru-bids" \
      org.opencontainers.image.description="BIDS-App: multiple-sclerosis lesion segmentation with Multi-Dimensional Gated Recurrent Units and lesion change between sessions" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$BUILD_DATE" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="https://pypi.org/project/mdgru-bids/" \
      org.opencontainers.image.base.name="$BASE_IMAGE"

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1001 mdgru \
    && useradd --create-home --shell /usr/sbin/nologin --uid 1001 --gid 1001 mdgru

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/templateflow /opt/templateflow

# No network at run time: TemplateFlow reads only the templates above, never updates, and
# Nipype sends no telemetry. Caches (matplotlib's, the BIDS validator's Deno) go to /tmp, so
# the image itself can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    DENO_DIR=/tmp/deno \
    PYTHONDONTWRITEBYTECODE=1

USER 1001:1001
WORKDIR /tmp
ENTRYPOINT ["mdgru-bids"]
CMD ["--help"]
