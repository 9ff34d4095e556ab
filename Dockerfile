# syntax=docker/dockerfile:1
# specfleet images, one Dockerfile, three targets:
#   docker build --target operator     -t specfleet-operator .      # kopf operator: no torch, no CUDA
#   docker build --target runtime-cpu  -t specfleet-runtime-cpu .   # runtime + CPU torch + bundled models
#   docker build --target runtime-cuda -t specfleet-runtime-cuda .  # runtime + CUDA torch + bundled models
# Every target runs as the numeric non-root user 10001 (the chart's and the operator's
# pod securityContext use the same id) with `specfleet` as the entrypoint.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128

# ---- build: one wheel holding specfleet, specfleet_runtime and specfleet_operator ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY specfleet ./specfleet
COPY runtime ./runtime
COPY operator ./operator
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- operator: the base dependencies of pyproject.toml only ----
FROM ${PYTHON_IMAGE} AS operator-venv
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/specfleet-*.whl \
    && python -c "import specfleet_operator, sys; assert 'torch' not in sys.modules"

FROM ${PYTHON_IMAGE} AS operator
RUN groupadd --gid 10001 specfleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin specfleet
COPY --from=operator-venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["specfleet"]
CMD ["operator", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]

# ---- runtime-cpu: CPU torch and the runtime extra, with the bundled models ----
FROM ${PYTHON_IMAGE} AS runtime-cpu-venv
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
# torch first from the CPU index, so the runtime extra's torch requirement is already met
# and pip does not pull the CUDA build.
RUN pip install --no-cache-dir --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "$(ls /wheels/specfleet-*.whl)[runtime]"

FROM ${PYTHON_IMAGE} AS runtime-cpu
RUN groupadd --gid 10001 specfleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin specfleet
COPY --from=runtime-cpu-venv /opt/venv /opt/venv
COPY models /opt/specfleet/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPECFLEET_MODELS_DIR=/opt/specfleet/models
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["specfleet"]

# ---- runtime-cuda: CUDA torch on NVIDIA's CUDA base (driver hooks, NVIDIA_* env) ----
FROM ${CUDA_IMAGE} AS runtime-cuda-venv
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX
# Versions of Ubuntu's python3 packages come with the pinned CUDA base image's release;
# pinning them again here would break the build at each Ubuntu security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --index-url "${TORCH_CUDA_INDEX}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "$(ls /wheels/specfleet-*.whl)[runtime]"

FROM ${CUDA_IMAGE} AS runtime-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 specfleet \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin specfleet
COPY --from=runtime-cuda-venv /opt/venv /opt/venv
COPY models /opt/specfleet/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPECFLEET_MODELS_DIR=/opt/specfleet/models
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["specfleet"]
