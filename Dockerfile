# Heliograph: one container, SQLite in /data by default; PostgreSQL and Redis by environment
# (deploy/docker-compose.yml runs the scale-out stack).
#   docker build -t heliograph .
#   docker run -p 8787:8787 -v heliograph-data:/data heliograph
#   docker exec <container> heliograph keys create --name my-app
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home heliograph
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER heliograph
WORKDIR /data
# Listen beyond the container; records and the journal on the volume; JSON logs for collectors.
ENV HELIOGRAPH_HOST=0.0.0.0 \
    HELIOGRAPH_PORT=8787 \
    HELIOGRAPH_DB_URL=sqlite:////data/heliograph.db \
    HELIOGRAPH_JOURNAL_DIR=/data/journal \
    HELIOGRAPH_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8787
# /readyz answers within a second: 503 when the store or Redis does not answer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('HELIOGRAPH_PORT', '8787'), timeout=2)"]
# SIGTERM: in-flight calls finish, the recorder drains (shutdown_timeout, 25 s by default).
STOPSIGNAL SIGTERM
CMD ["heliograph", "serve"]
