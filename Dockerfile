# syntax=docker/dockerfile:1
# vit-service images. Stages:
#   build   installs the pinned serving environment into /opt/venv (docker/install.sh)
#   export  the torch side (vit-train, vit-export) on CPU, for making bundles
#   serve   the runtime image and the default target: the venv, the demo bundle, a non-root user
#
#   docker build -t vit-service:gpu .                           onnxruntime-gpu + CUDA/cuDNN wheels
#   docker build --build-arg FLAVOR=cpu -t vit-service:cpu .    onnxruntime (CPU) only
#   docker build --target export -t vit-service:export .
#
# The GPU image carries CUDA and cuDNN as wheels, so the host needs only the NVIDIA driver and
# the NVIDIA Container Toolkit; no CUDA base image and no compiler ever enters it.

# Must match PYTHON in docker/lock.py: the locks hold wheels built for this interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --user-group --uid 10001 --no-create-home --shell /usr/sbin/nologin vit

FROM base AS build
ARG FLAVOR=gpu
WORKDIR /src
# Dependencies first, in their own layer: it is large (GBs for gpu) and changes only with the lock.
COPY docker/install.sh docker/requirements-${FLAVOR}.txt docker/
RUN --mount=type=cache,target=/root/.cache/pip docker/install.sh /opt/venv ${FLAVOR}
COPY pyproject.toml ./
COPY vit_core/ vit_core/
COPY service/ service/
RUN docker/install.sh /opt/venv ${FLAVOR} /src

FROM base AS export
# Optional: an index with CPU-only torch wheels keeps the CUDA build of torch out of this image.
ARG PIP_EXTRA_INDEX_URL
WORKDIR /src
COPY constraints/ constraints/
COPY pyproject.toml ./
COPY vit_core/ vit_core/
COPY model_export/ model_export/
COPY service/ service/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints/cpu.txt '.[cpu,export]'
ENV PATH=/opt/venv/bin:$PATH
# Run with --user "$(id -u):$(id -g)" and your checkpoints and bundles mounted under /work.
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["vit-export"]

FROM base AS serve
ARG FLAVOR=gpu
LABEL org.opencontainers.image.title="vit-service" \
      org.opencontainers.image.description="Vision Transformer over HTTP on ONNX Runtime (${FLAVOR})" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# Let the dynamic loader find the CUDA and cuDNN libraries that came as wheels (gpu flavor;
# an empty list for cpu), so ONNX Runtime's CUDA provider loads without LD_LIBRARY_PATH.
RUN find /opt/venv -path '*/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
        > /etc/ld.so.conf.d/vit-cuda-wheels.conf \
    && ldconfig
# The default bundle; mount your own read-only anywhere (e.g. /bundle) and set VIT_BUNDLE to it.
COPY models/demo/ /app/models/demo/
WORKDIR /app
# HOME: uid 10001 has no home and the root file system is read-only under compose and Kubernetes,
# so ONNX Runtime warned on every start that it could not save its telemetry device ID there.
# /tmp is the one place both mount writable (tmpfs, emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    VIT_BUNDLE=/app/models/demo \
    VIT_HOST=0.0.0.0 \
    VIT_PORT=8000 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Ready, not just alive: 503 until the model is loaded and warm, and again if the batch worker dies.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('VIT_PORT', '8000'), timeout=2)"]
# vit-serve is PID 1 and handles SIGTERM itself: it stops accepting, drains queued work for up to
# VIT_DRAIN_TIMEOUT_S, then exits; give it that long (compose stop_grace_period, k8s grace period).
ENTRYPOINT ["vit-serve"]
