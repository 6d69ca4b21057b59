"""The web console in headless Chromium (DevTools protocol) at a phone's screen
width: a login with the ServerSecret, a real recording from a test publisher
appears, its HLS file plays in the page's player while it is recorded (the video
element's currentTime advances, no error), Stop ends the task; a screenshot of
the console is kept in the test artifacts directory. And what /console refuses
without a login."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from testkit.node import SERVER_SECRET, http, start_record_body
from testkit.rtp import PublisherSpec
from tests.e2e.publishing import publish, run_publisher
from tests.helpers import chromium
from tests.helpers.cdp import Browser

ARTIFACTS = Path(os.environ.get("RECNODE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
PHONE = (390, 844)  # a phone's CSS pixels


def test_the_console_needs_a_login(node):
    assert http("GET", node.base_url + "/console").status == 200  # the page (its login form)
    assert http("GET", node.base_url + "/console/api/overview").status == 401
    assert http("POST", node.base_url + "/console/api/tasks/x/stop").status == 401
    wrong = http("POST", node.base_url + "/console/login", json.dumps({"token": "guess"}).encode())
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    forged = http("GET", node.base_url + "/console/api/overview", headers={"Cookie": "recnode_console=9999999999.00"})
    assert forged.status == 401
    good = http("POST", node.base_url + "/console/login", json.dumps({"token": SERVER_SECRET}).encode())
    assert good.status == 200
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    session = cookie.split(";")[0]
    overview = http("GET", node.base_url + "/console/api/overview", headers={"Cookie": session})
    assert overview.status == 200 and overview.json()["node"]["state"] == "ready"


@pytest.mark.skipif(not chromium.available(), reason=f"no Chromium at {chromium.CHROMIUM}")
def test_a_recording_is_watched_and_stopped_from_the_console(node, tmp_path):
    body = start_record_body("room-console")
    body["RecordOutputParams"].update(OutputFileFormat="hls", FragmentSeconds=2)
    task_id = node.ok("StartRecord", body)["TaskId"]
    spec = PublisherSpec(duration_s=30.0, loop_clip_s=2.0, keep_sent_bytes=False)
    location, targets = publish(node, "room-console", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    try:
        asyncio.run(_drive_console(node, task_id))
        data = node.wait_task(task_id, lambda d: d["Status"] == 3 and all(f["Status"] == 3 for f in d["RecordFiles"]))
        assert data["RecordFiles"][0]["Duration"] > 2000
    finally:
        process.terminate()
        process.wait(10)
        node.unpublish(location)


async def _drive_console(node, task_id: str) -> None:
    async with Browser() as browser:
        page = await browser.page(*PHONE, mobile=True)
        await page.goto(node.base_url + "/console")
        await page.wait_for("!document.getElementById('login').hidden")
        await page.evaluate(f"document.getElementById('token').value = {json.dumps(SERVER_SECRET)};"
                            "document.getElementById('login').requestSubmit()")
        task = f"document.querySelector('.task[data-task=\"{task_id}\"]')"
        try:
            await page.wait_for(task)
        except TimeoutError:
            raise AssertionError(f"{await page.evaluate('document.body.innerText')}\n{browser.problems}") from None
        # the player needs a segment to start on: wait for the file and its first segment
        play = f"{task}.querySelector('button[data-play]')"
        await page.wait_for(play, timeout=20)
        url = await page.evaluate(f"fetch('/console/api/overview').then(r => r.json()).then(d => "
                                  f"d.tasks.find(t => t.taskId === '{task_id}').files[0].url)")
        await page.wait_for(f"fetch({json.dumps(url)}).then(r => r.text()).then(t => t.includes('.ts?'))")
        await page.evaluate(f"{play}.click()")
        try:
            await page.wait_for("document.getElementById('player').currentTime > 1.5", timeout=30)
        except TimeoutError:
            state = await page.evaluate(
                "(v => [v.currentTime, v.readyState, v.networkState, v.paused, v.src, v.error && v.error.message, "
                "document.getElementById('player-error').textContent, !!window.Hls, v.buffered.length])"
                "(document.getElementById('player'))")
            raise AssertionError(f"{state} {browser.problems}") from None
        errors = await page.evaluate("(v => [document.getElementById('player-error').textContent, "
                                     "v.error && v.error.code])(document.getElementById('player'))")
        assert errors == ["", None], errors
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= PHONE[0], f"the page is {wide} px wide on a {PHONE[0]} px screen"
        await page.screenshot(ARTIFACTS / "console-phone.png")
        await page.evaluate(f"{task}.querySelector('button[data-action=\"stop\"]').click()")
        badge = f"document.querySelector('[data-status-of=\"{task_id}\"]')"
        await page.wait_for(f"({badge} || {{}}).textContent === 'ended'", timeout=20)
        assert browser.problems == [], browser.problems
