# recnode: one image, `recnode serve` (the service; workers are forked from it).
FROM python:3.12-slim

# UDP: plain RTP on 40000-40999, WebRTC (ICE) on 41000-41999, bound on every
# address of the container; answers carry RECNODE_ADVERTISED_ADDRESS, which
# `docker run` must set to the address publishers reach the host on.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECNODE_HOST=0.0.0.0 \
    RECNODE_DATA_DIR=/data \
    RECNODE_RTP_PORTS=40000-40999 \
    RECNODE_WEBRTC_HOSTS=0.0.0.0 \
    RECNODE_WEBRTC_PORTS=41000-41999

RUN useradd --create-home --uid 10001 recnode \
    && mkdir /data && chown recnode:recnode /data

WORKDIR /app
# The dependencies, in a layer of their own: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
# Then the code: a change here reinstalls recnode alone.
COPY README.md ./
COPY contract ./contract
COPY engine ./engine
COPY workers ./workers
COPY storage_adapters ./storage_adapters
COPY testkit ./testkit
RUN pip install --no-cache-dir --no-deps .

USER recnode
VOLUME ["/data"]
EXPOSE 8080/tcp 40000-40999/udp 41000-41999/udp
# start period: a node waits up to 10 s for a PostgreSQL store, then migrates it and warms its worker template
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"
ENTRYPOINT ["recnode"]
CMD ["serve"]
