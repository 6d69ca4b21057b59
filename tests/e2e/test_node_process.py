"""The `recnode serve` process itself, as an operator meets it: CPU admission
next to other busy processes."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

import psutil

from engine import defaults
from engine.capacity import CPU_SMOOTHING
from tests.helpers.api import NodeProcess, free_port, free_udp_range, http, start_record_body
from tests.helpers.rtp_publisher import PublisherSpec, offer_sdp


# CPU admission

def test_busy_processes_outside_the_node_do_not_make_it_refuse_work(tmp_path):
    """The default --cpu-cap, with every core the node may use kept busy by other processes."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in os.sched_getaffinity(0)]
    node = None
    try:
        deadline = time.monotonic() + 10
        while sum(p.cpu_times().user for p in map(psutil.Process, (b.pid for b in burners))) < 0.2 * len(burners):
            assert time.monotonic() < deadline, "the burners never ran"
            time.sleep(0.05)
        node = NodeProcess(tmp_path / "data", free_port(), free_udp_range(10), tmp_path / "n.log",
                           cpu_cap=None).start(timeout=60)
        # Long enough for the node's CPU average to reach 90 % of any step in what it measures.
        samples = math.ceil(math.log(0.1) / math.log(1 - CPU_SMOOTHING)) + 1
        time.sleep(samples * defaults.TICK_S)
        metrics = http("GET", node.base_url + "/metrics").body.decode()
        cpu = float(re.search(r"^recnode_cpu_utilization (\S+)$", metrics, re.M).group(1))
        assert cpu < defaults.CPU_CAP, metrics
        answer = node.publish("cpu-room", "cam", offer_sdp(PublisherSpec(), True, True))
        assert answer.status == 201, (answer, node.logs()[-2000:])
        started = node.call("StartRecord", start_record_body("cpu-room"))
        assert started["Code"] == 0, started
        assert "refused" not in node.logs()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        if node is not None:
            node.stop()
