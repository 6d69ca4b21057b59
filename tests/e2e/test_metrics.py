"""/metrics of a real `recnode serve` with a real RTP publisher: the ingest counters
are what the stream's worker counted, a recording moves the API, storage and
StopRecord counters; and every metric the Prometheus alerts and the Grafana
dashboard in deploy/ name is one the node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from testkit.node import http, start_record_body
from testkit.rtp import PublisherSpec, Quirks, wait_manifest
from tests.e2e.publishing import publish, run_publisher, stop_and_describe
from tests.metrics_text import families, value

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Names in PromQL that are not metrics: functions, keywords, Prometheus's own series.
NOT_METRICS = {"up"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def scrape(node) -> str:
    answer = http("GET", node.base_url + "/metrics")
    assert answer.status == 200
    return answer.body.decode()


def test_ingest_and_recording_counters_follow_what_happened(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0, quirks=Quirks(garbage_datagrams=5, foreign_datagrams=4,
                                                       drop=(("video", 75, 0),)))
    before = scrape(node)
    location, targets = publish(node, "room-metrics", "cam", spec, sprop=False)
    task_id = node.ok("StartRecord", start_record_body("room-metrics"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_manifest(spec.manifest_path, proc=process)
    tracks = node.stream_stats(location)["Tracks"]
    during = scrape(node)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    after = scrape(node)

    def grown(name: str, old: str, new: str, **labels: str) -> float:
        return value(new, name, **labels) - value(old, name, **labels)

    video = tracks["video"]
    for metric, counter in (("recnode_ingest_datagrams_total", "datagrams"),
                            ("recnode_ingest_garbage_datagrams_total", "garbage"),
                            ("recnode_ingest_foreign_datagrams_total", "foreign"),
                            ("recnode_ingest_lost_packets_total", "jitter_lost_packets"),
                            ("recnode_ingest_late_packets_total", "jitter_late")):
        assert grown(metric, before, during, input="rtp", track="video") == video[counter], metric
    assert (video["garbage"], video["foreign"], video["jitter_lost_packets"]) == (5, 4, 1)
    assert grown("recnode_ingest_datagrams_total", before, during, input="rtp", track="audio") \
        == tracks["audio"]["datagrams"] > 0
    assert grown("recnode_publishes_total", before, after, input="rtp", outcome="accepted") == 1
    assert grown("recnode_api_requests_total", before, after, action="StartRecord", code="0") == 1
    assert grown("recnode_api_requests_total", before, after, action="StopRecord", code="0") == 1
    assert grown("recnode_storage_written_bytes_total", before, after, vendor="0") == entry["FileSize"]
    assert grown("recnode_stop_to_durable_seconds_count", before, after) == 1
    assert grown("recnode_worker_starts_total", before, after) == 1


def _metric_names(expression: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    return {n for n in re.findall(r"[a-z_:][a-z0-9_:]*", without_by) if n.startswith(("recnode_", "process_"))} \
        | ({"up"} & set(re.findall(r"\bup\b", without_by)))


def _exported(name: str, exported: set[str]) -> bool:
    family = name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            family = name[: -len(suffix)]
    return family in exported or name in exported


def test_every_metric_the_alerts_and_the_dashboard_name_is_exported(node):
    exported = set(families(scrape(node)))
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((DEPLOY / "grafana" / "recnode.json").read_text())
    expressions = [rule["expr"] for rule in rules]
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    names = set().union(*(_metric_names(e) for e in expressions)) - NOT_METRICS
    assert {"recnode_callbacks_given_up_total", "recnode_spool_bytes", "recnode_upload_failures_total",
            "recnode_load", "recnode_worker_deaths_total"} <= names  # the alerts that matter are there
    missing = sorted(n for n in names if not _exported(n, exported))
    assert missing == []
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule
