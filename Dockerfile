# scalyproxy: a guarding MongoDB wire-protocol proxy.
# Stage 1 builds the wheel, with its C extension (scalyproxy._scan), where a
# compiler is; the runtime image gets the wheel and no compiler.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY scalyproxy ./scalyproxy
COPY scalymongo_client ./scalymongo_client
# the extension is optional for pip; the image insists on it
RUN pip wheel --no-deps --wheel-dir /wheels . && python -m zipfile -l /wheels/*.whl | grep '_scan.*\.so' 

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels && useradd --system --uid 10001 --home-dir /app scaly
COPY config ./config
USER scaly
EXPOSE 27017 9216
# /readyz: config loaded and at least one upstream reachable (admin listener on 9216)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9216/readyz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["scalyproxy"]
CMD ["run", "--config", "/app/config/docker.yaml"]
