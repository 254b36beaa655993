# syntax=docker/dockerfile:1
#
# warehouse-operator image: the operator in a virtualenv on python:3.11-slim.
#
#   docker build -t warehouse-operator:dev .
#
# The final image runs as a numeric non-root user, needs no writable path but /tmp (mount an
# emptyDir there, as the Helm chart and deploy/manifests do), and holds no compiler or pip cache.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: resolve and install the project and its dependencies into /opt/venv ----------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /src
RUN python -m venv /opt/venv

# The project is built into a wheel, then installed with its dependencies. Every dependency
# ships binary wheels for CPython 3.11 on x86_64 and aarch64: --only-binary keeps a compiler
# out of the build (and fails loudly should one ever be needed). pip installs compiled
# bytecode; pip itself is then removed, as nothing installs at run time.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --only-binary=:all: /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

# --- final: the runtime only -----------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="warehouse-operator" \
      org.opencontainers.image.description="Kubernetes operator that continuously tests data-warehouse connections" \
      org.opencontainers.image.licenses="Apache-2.0"

# Bytecode was compiled in the builder; nothing is written at run time (read-only root
# filesystem). HOME and TMPDIR point at /tmp, the one writable mount, for libraries that keep
# caches there (the Snowflake connector's OCSP cache).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp

COPY --from=builder /opt/venv /opt/venv

# 65532: the conventional "nonroot" id; numeric, so that runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp

EXPOSE 8080 8081 9443

ENTRYPOINT ["warehouse-operator"]
CMD ["run"]
