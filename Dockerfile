# Multi-stage: build a wheel-complete virtualenv, then copy it into a slim, non-root runtime.
# The web pages' htmx comes from the npm package pinned by package-lock.json.
FROM node:20-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY --from=assets /src/node_modules/htmx.org/dist/htmx.min.js ./app/web/static/vendor/htmx.min.js
COPY builtin_plugins ./builtin_plugins
COPY integrations ./integrations
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 omi && mkdir -p /data && chown omi /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    OMI_DATA_DIR=/data \
    OMI_HOST=0.0.0.0 \
    OMI_PORT=8000 \
    PYTHONUNBUFFERED=1
USER omi
WORKDIR /home/omi
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["omi-backend", "serve"]
