# syntax=docker/dockerfile:1.7
# One image for every HybridInference service; the first argument picks the service
# (deploy/docker/entrypoint.py):
#   docker build -t hybridinference .
#   docker run --rm hybridinference gateway --config /etc/hybridinference/mesh.yaml --host 0.0.0.0
# Envoy is not in here: it runs from the official envoyproxy/envoy image (deploy/docker-compose.yml).

# Pinned base (the Python the project supports, on Debian 12). Pin the digest too where builds
# must be reproducible: FROM python:3.11.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Optional dependency groups of pyproject.toml to add (space separated), e.g. "vllm".
ARG EXTRAS=""
# Dependencies first, from the lock alone: this layer (the slow one) is reused until the
# dependencies change; editing the code only rebuilds the small layer below. Every dependency is
# a wheel for this platform, so no compiler is needed. Without EXTRAS the image installs exactly
# deploy/docker/requirements.lock, every file checked against its hash; extra groups are not in
# the lock and are installed from pyproject.toml's pins (requirements.py).
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.lock deploy/docker/
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -z "${EXTRAS}" ]; then \
        pip install --only-binary=:all: --require-hashes -r deploy/docker/requirements.lock; \
    else \
        python deploy/docker/requirements.py pyproject.toml ${EXTRAS} > /tmp/requirements.txt \
        && pip install --only-binary=:all: -r /tmp/requirements.txt; \
    fi
# The project itself: the package in services/, generated contracts included (see .dockerignore).
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hybridinference" \
      org.opencontainers.image.description="HybridInference gRPC services (gateway, router, provider workers, logger)"
# A fixed, unprivileged uid/gid, so volume permissions are the same on every host.
RUN groupadd --system --gid 10001 hybridinference \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hybridinference \
       --shell /usr/sbin/nologin hybridinference \
    && install -d -o hybridinference -g hybridinference -m 0750 \
       /var/lib/hybridinference /var/lib/hybridinference/var /etc/hybridinference
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/entrypoint.py /usr/local/bin/hybridinference-service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Relative paths of the config (var/requests.db, spools) land here; mount volumes on var/.
WORKDIR /var/lib/hybridinference
USER 10001:10001
ENTRYPOINT ["hybridinference-service"]
CMD ["--help"]
