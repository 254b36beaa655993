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
# bytecode; then the packaging tools the venv brought are removed (nothing installs at run
# time, nothing at run time imports them, and image scanners flag them): pip, setuptools with
# its pkg_resources, _distutils_hack and distutils-precedence.pth, and wheel should any
# dependency pull it in. The last step fails the build if any of them is left.
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --only-binary=:all: /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes setuptools wheel pip \
    && rm -rf /opt/venv/lib/python3*/site-packages/_distutils_hack \
              /opt/venv/lib/python3*/site-packages/distutils-precedence.pth \
    && test -z "$(find /opt/venv -maxdepth 4 \( -iname 'pip' -o -iname 'pip-*' -o -iname 'pip3*' \
                  -o -iname 'setuptools*' -o -iname 'pkg_resources' -o -iname '_distutils_hack' \
                  -o -iname 'distutils-precedence.pth' -o -iname 'wheel' -o -iname 'wheel-*' \) \
                  -print)"

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
