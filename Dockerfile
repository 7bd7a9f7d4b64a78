# One image for every orderpulse service; the command picks the step
# (topics, migrate, webhook, poll, streams, sink, lag, report): see docker-compose.yml.
# Python 3.11, the version `make test` exercises (pyproject.toml).
FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orderpulse ./orderpulse
COPY streams ./streams
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/orderpulse orderpulse
# The working directory must be the unprivileged user's: Faust creates its data directory
# there at start, and ORDERPULSE_DATA_DIR (./var) is relative to it.
WORKDIR /var/lib/orderpulse
USER orderpulse
ENTRYPOINT ["orderpulse"]
CMD ["--help"]
