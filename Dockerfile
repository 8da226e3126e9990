# scalyproxy: a guarding MongoDB wire-protocol proxy.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scalyproxy ./scalyproxy
COPY scalymongo_client ./scalymongo_client
RUN pip install . && useradd --system --uid 10001 --home-dir /app scaly
COPY config ./config
USER scaly
EXPOSE 27017 9216
# /readyz: config loaded and at least one upstream reachable (admin listener on 9216)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9216/readyz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["scalyproxy"]
CMD ["run", "--config", "/app/config/docker.yaml"]
