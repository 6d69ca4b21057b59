# recnode: one image, `recnode serve` (the service; workers are forked from it).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECNODE_HOST=0.0.0.0 \
    RECNODE_DATA_DIR=/data \
    RECNODE_RTP_PORTS=40000-40999

RUN useradd --create-home --uid 10001 recnode \
    && mkdir /data && chown recnode:recnode /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY engine ./engine
COPY workers ./workers
COPY storage_adapters ./storage_adapters
COPY testkit ./testkit
RUN pip install --no-cache-dir .

USER recnode
VOLUME ["/data"]
EXPOSE 8080/tcp 40000-40999/udp
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"
ENTRYPOINT ["recnode"]
CMD ["serve"]
