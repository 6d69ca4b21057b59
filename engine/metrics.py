"""/metrics through prometheus_client.

Counters and histograms live in one process-wide registry (`REGISTRY`, with the
process collector): the code that sees an event increments them. What describes
the node as it is now (streams, tasks, capacity, spool) is a snapshot taken at
scrape time and rendered as gauges beside them. Ingest counters (datagrams,
garbage, foreign, lost, late) are the workers' own per-track counters, polled by
the node (`IngestTotals`), so the media path makes no metric calls at all.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.capacity import Capacity
from engine.status import TaskStatus
from engine.version import package_version, version

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_NAMES = {TaskStatus.INITIALISING: "initialising", TaskStatus.RECORDING: "recording",
                TaskStatus.ENDED: "ended", TaskStatus.ENDED_ABNORMALLY: "ended_abnormally",
                TaskStatus.PAUSED: "paused"}
API_ACTIONS = ("StartRecord", "StopRecord", "DescribeRecordStatus", "DescribeTasks", "PauseRecord", "ResumeRecord")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURABLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

BUILD = Info("recnode_build", "The running recnode: version, Python, PyAV and aiortc", registry=REGISTRY)

API_REQUESTS = Counter("recnode_api_requests", "Recording API calls by Action and answer Code",
                       ["action", "code"], registry=REGISTRY)
API_LATENCY = Histogram("recnode_api_request_duration_seconds", "Recording API calls: time to answer, by Action",
                        ["action"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
PUBLISHES = Counter("recnode_publishes", "Publish requests (RTP announcements, WHIP offers) by outcome: "
                    "accepted, redirected (307 to another node of the fleet), or the reason they were refused", ["input", "outcome"], registry=REGISTRY)

PUBLISH_REDIRECTS = Counter("recnode_publish_redirects", "Publish requests answered 307 to another node of the "
                            "fleet, by input and reason (full, draining, room_affinity)", ["input", "reason"],
                            registry=REGISTRY)

STORAGE_WRITTEN = Counter("recnode_storage_written_bytes", "Bytes of recorded files that storage acknowledged "
                          "(the node's disk, or the spool for a bucket), by Vendor", ["vendor"], registry=REGISTRY)
UPLOADED_BYTES = Counter("recnode_upload_bytes", "Bytes sent from the spool to buckets, by Vendor",
                         ["vendor"], registry=REGISTRY)
UPLOADED_OBJECTS = Counter("recnode_uploaded_objects", "Objects the bucket holds whole, by Vendor",
                           ["vendor"], registry=REGISTRY)
UPLOAD_RETRIES = Counter("recnode_upload_retries", "Upload steps that failed and will be retried, by Vendor",
                         ["vendor"], registry=REGISTRY)
UPLOAD_FAILURES = Counter("recnode_upload_failures", "Objects the bucket refused for good (kept in the spool)",
                          ["vendor"], registry=REGISTRY)

CALLBACK_DELIVERIES = Counter("recnode_callback_deliveries", "Callback delivery attempts by result "
                              "(delivered, failed)", ["result"], registry=REGISTRY)
CALLBACK_RETRIES = Counter("recnode_callback_retries", "Failed callback deliveries that will be retried",
                           registry=REGISTRY)
CALLBACKS_GIVEN_UP = Counter("recnode_callbacks_given_up", "Callbacks dropped after their last retry failed",
                             registry=REGISTRY)

WORKER_STARTS = Counter("recnode_worker_starts", "Worker processes started (answered Ready)", registry=REGISTRY)
WORKER_START_FAILURES = Counter("recnode_worker_start_failures", "Worker processes that did not start",
                                registry=REGISTRY)
WORKER_DEATHS = Counter("recnode_worker_deaths", "Workers that exited without being asked to", registry=REGISTRY)
WORKER_RESTARTS = Counter("recnode_worker_restarts", "Workers started again for a stream whose worker died",
                          registry=REGISTRY)

STOP_TO_DURABLE = Histogram("recnode_stop_to_durable_seconds", "StopRecord until every file of the task is "
                            "stored where it goes (uploaded, for a bucket)", buckets=DURABLE_BUCKETS,
                            registry=REGISTRY)

# Worker per-track counters -> metric (help, the counter names a worker reports it under, first found wins).
INGEST_COUNTERS = {
    "recnode_ingest_datagrams": ("RTP datagrams received", ("datagrams", "packets")),
    "recnode_ingest_garbage_datagrams": ("Datagrams that did not parse or did not belong to the track",
                                         ("garbage",)),
    "recnode_ingest_foreign_datagrams": ("Datagrams from another source address or SSRC", ("foreign",)),
    "recnode_ingest_lost_packets": ("RTP packets given up on as lost", ("jitter_lost_packets", "lost")),
    "recnode_ingest_late_packets": ("RTP packets that came after their place was released", ("jitter_late",)),
}


BUILD.info({"version": version(), "python": platform.python_version(), "av": package_version("av"),
            "aiortc": package_version("aiortc")})


def api_action_label(action: str) -> str:
    """Bounded label values: an Action the API does not know counts as "other"."""
    return action if action in API_ACTIONS else "other"


def vendor_label(vendor: int | None) -> str:
    return "unknown" if vendor is None else str(vendor)


class UploadMetrics:
    """The uploader's observer (storage_adapters.uploader.UploadObserver)."""

    def sent(self, vendor: int, size: int) -> None:
        UPLOADED_BYTES.labels(vendor_label(vendor)).inc(size)

    def uploaded(self, vendor: int) -> None:
        UPLOADED_OBJECTS.labels(vendor_label(vendor)).inc()

    def retried(self, vendor: int) -> None:
        UPLOAD_RETRIES.labels(vendor_label(vendor)).inc()

    def failed(self, vendor: int | None) -> None:
        UPLOAD_FAILURES.labels(vendor_label(vendor)).inc()


@dataclass
class IngestTotals:
    """Per (input kind, track kind) sums of the workers' per-track counters, kept
    monotonic: each stream's counters are remembered as last polled and only their
    growth is added (a counter that went down started again, e.g. a new input
    session, and counts whole). A stream's counts after its last poll are lost
    when it ends; the node polls every few seconds."""

    totals: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (metric, input, track) -> sum
    _last: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)  # stream key -> last seen

    def observe(self, stream_key: str, input_kind: str, tracks: dict[str, dict[str, float]]) -> None:
        last = self._last.setdefault(stream_key, {})
        for track, counters in tracks.items():
            for metric, (_, names) in INGEST_COUNTERS.items():
                value = next((counters[n] for n in names if n in counters), None)
                if value is None:
                    continue
                before = last.get((metric, track), 0.0)
                grown = value - before if value >= before else value
                last[(metric, track)] = value
                key = (metric, input_kind, track)
                self.totals[key] = self.totals.get(key, 0.0) + grown

    def keep_only(self, stream_keys: set[str]) -> None:
        """Forget the streams that are gone (their sums stay)."""
        for gone in self._last.keys() - stream_keys:
            del self._last[gone]

    def families(self) -> list[CounterMetricFamily]:
        families = []
        for metric, (help_text, _) in INGEST_COUNTERS.items():
            family = CounterMetricFamily(metric, help_text, labels=["input", "track"])
            for (name, input_kind, track), value in sorted(self.totals.items()):
                if name == metric:
                    family.add_metric([input_kind, track], value)
            families.append(family)
        return families


@dataclass(frozen=True)
class NodeSnapshot:
    """What the node is now, for the gauges of one scrape."""

    capacity: Capacity
    streams: int
    workers: int
    active_tasks: dict[TaskStatus, int]
    ended_tasks: dict[TaskStatus, int]
    upload_backlog: int
    spool_bytes: int
    spool_max_bytes: int
    callback_backlog: int
    ready: bool


class _Collector:
    def __init__(self, snapshot: NodeSnapshot, ingest: IngestTotals):
        self._snapshot = snapshot
        self._ingest = ingest

    def collect(self):
        s = self._snapshot
        tasks = {**s.active_tasks, **s.ended_tasks}

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, value=value)

        yield gauge("recnode_load", "Load against capacity (1 = full: new work is refused)",
                    s.capacity.load(s.streams, sum(s.active_tasks.values())))
        yield gauge("recnode_cpu_utilization",
                    "Share of the CPU the node may use that the node and its workers use (moving average)",
                    s.capacity.cpu)
        yield gauge("recnode_capacity_streams", "Published streams this node takes", s.capacity.max_streams)
        yield gauge("recnode_capacity_tasks", "Active tasks this node takes", s.capacity.max_tasks)
        yield gauge("recnode_streams", "Published streams", s.streams)
        yield gauge("recnode_workers", "Worker processes", s.workers)
        by_status = GaugeMetricFamily("recnode_tasks", "Tasks by status (ended ones: since the store began)",
                                      labels=["status"])
        for status, count in tasks.items():
            by_status.add_metric([STATUS_NAMES[status]], count)
        yield by_status
        yield gauge("recnode_upload_backlog_objects", "Objects waiting in the spool for their bucket",
                    s.upload_backlog)
        yield gauge("recnode_spool_bytes", "Bytes in the upload spool", s.spool_bytes)
        yield gauge("recnode_spool_max_bytes", "Bytes the upload spool may use (--spool-max-bytes)",
                    s.spool_max_bytes)
        yield gauge("recnode_callback_backlog", "Callbacks in the outbox not yet delivered or given up",
                    s.callback_backlog)
        yield gauge("recnode_ready", "1 when the node takes work", 1 if s.ready else 0)
        yield from self._ingest.families()


def render_metrics(snapshot: NodeSnapshot, ingest: IngestTotals) -> bytes:
    """The whole exposition: the process-wide counters, then this node's gauges."""
    now = CollectorRegistry()
    now.register(_Collector(snapshot, ingest))
    return generate_latest(REGISTRY) + generate_latest(now)
