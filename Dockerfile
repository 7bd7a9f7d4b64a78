# One image for every orderpulse service; the command picks the step
# (webhook, streams, sink, topics, report).
FROM python:3.11.7-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orderpulse ./orderpulse
COPY streams ./streams
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install . && useradd --system --uid 10001 orderpulse
USER orderpulse
ENTRYPOINT ["orderpulse"]
