# kcprpc server image: `kcprpc serve`, configured through KCPRPC_* variables (docs/deploy.md).
#
#   docker build -t kcprpc .
#   docker run --rm -p 9000:9000/udp -p 9464:9464 kcprpc            # the quickstart example app
#
# Your app: an image FROM this one that copies its package into /app and names it:
#   FROM kcprpc
#   COPY mygame /app/mygame
#   ENV KCPRPC_APP=mygame.server:app

# --- build: a wheel whose protocol cores mypyc compiles (setup.py; needs a C compiler), and the
#     wheels of every dependency, so the runtime image needs neither a compiler nor an index
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[redis,nats,metrics]'

# --- runtime
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'kcprpc[redis,nats,metrics]' \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kcprpc
WORKDIR /app
# the example apps, so that the image serves something out of the box
COPY --chown=root:root examples /app/examples
ENV PYTHONUNBUFFERED=1 \
    KCPRPC_APP=examples.quickstart.service:app \
    KCPRPC_HOST=0.0.0.0 \
    KCPRPC_PORT=9000 \
    KCPRPC_METRICS=0.0.0.0:9464 \
    KCPRPC_LOG_FORMAT=json \
    KCPRPC_LOG_LEVEL=info
# the UDP port of the server (KCPRPC_PORT) and the TCP port of /metrics and /healthz (KCPRPC_METRICS)
EXPOSE 9000/udp 9464/tcp
USER kcprpc
# 200 while serving with its broker reachable; 503 while draining or with the broker down
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['KCPRPC_METRICS'].rsplit(':', 1)[1], timeout=2)"]
# SIGTERM (docker stop) drains: GOAWAY to clients, in-flight calls get KCPRPC_GRACE seconds (default 5)
STOPSIGNAL SIGTERM
CMD ["kcprpc", "serve"]
