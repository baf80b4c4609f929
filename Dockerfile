# syntax=docker/dockerfile:1
# The mla_node image: a state's node (`mla-node run`, the default) or, with another command, the
# network authority's directory service (`mla-node authority serve`). It runs as the unprivileged
# user `mla`; everything a node keeps (config.toml, keys/, node.db, trust-root.json,
# directory.bin) lives in the volume /var/lib/mla-node. docs/deployment.md explains it.
ARG PYTHON_VERSION=3.12

# Build the wheel apart, so that neither the sources nor the build tools end up in the image.
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mla_node ./mla_node
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed uid/gid, so that volumes keep their owner across rebuilds and hosts.
RUN groupadd --system --gid 10001 mla \
 && useradd --system --uid 10001 --gid mla --home-dir /var/lib/mla-node --no-create-home \
      --shell /usr/sbin/nologin mla \
 && install -d -o mla -g mla -m 0700 /var/lib/mla-node
COPY --from=build /wheels /tmp/wheels
# With the postgresql extra (asyncpg): the same image runs a worker of a node on PostgreSQL.
RUN pip install --no-cache-dir "$(ls /tmp/wheels/*.whl)[postgresql]" && rm -rf /tmp/wheels
COPY --chmod=0755 docker/init-network.sh /usr/local/bin/mla-node-init-network

USER mla
WORKDIR /var/lib/mla-node
# A new volume mounted here takes this folder's owner (mla) and mode (0700).
VOLUME ["/var/lib/mla-node"]
# 8080: clerk API (plain HTTP with tokens: publish it on a local address only); 8443: the
# mutual-TLS peer endpoint; 8444: the directory service, when the image runs the authority.
EXPOSE 8080 8443 8444
# /healthz answers while the process serves; /readyz says whether it can do its work.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["mla-node"]
CMD ["run", "--config", "/var/lib/mla-node/config.toml"]
