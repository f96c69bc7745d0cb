# pyloto for Cloud Run: `docker build -t pyloto .` then `docker run -p 8080:8080 pyloto`.
# Both stages share one base so the virtualenv built in the first runs unchanged in the second.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Dependencies first, from the lock alone, so editing the code does not reinstall them.
# --require-hashes: every file pip downloads must match the hash in requirements.lock.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock

# The project as a wheel (statecharts/ and otel.yaml are packaged inside it); its
# dependencies are already there, pinned, so --no-deps keeps pip from resolving anything again.
WORKDIR /src
COPY pyproject.toml README.md otel.yaml ./
COPY src ./src
COPY statecharts ./statecharts
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl


FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PORT=8080 \
    FORWARDED_ALLOW_IPS="*"
# PORT: Cloud Run sets it (8080); `pyloto serve` reads it. FORWARDED_ALLOW_IPS: the only way
# in is Cloud Run's front end, so uvicorn trusts its X-Forwarded-For / X-Forwarded-Proto.

# The home directory is the working one: it holds the embedded SQLite store (./pyloto.db)
# when no Redis is set, so the unprivileged user must own it.
RUN groupadd --system --gid 10001 pyloto \
    && useradd --system --uid 10001 --gid pyloto --create-home --home-dir /app \
        --shell /usr/sbin/nologin pyloto
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001

EXPOSE 8080
# No curl in the slim image: the interpreter asks /health itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/health', timeout=4)"]

# Access log off, proxy headers on and a graceful shutdown are set by `pyloto serve`.
CMD ["pyloto", "serve", "--host", "0.0.0.0"]
