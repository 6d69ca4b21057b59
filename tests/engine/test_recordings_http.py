"""/recordings/<Bucket>/<key>: signed links (engine.signed_urls) and the route that
serves the node's disk (engine.recordings_http), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import urllib.parse

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from engine.recordings_http import CONTENT_TYPES, RecordingFiles
from engine.signed_urls import RecordingUrls

BASE = "http://node.example:8080"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_signed_link_grants_its_object_until_it_expires_and_nothing_else():
    clock = Clock()
    urls = RecordingUrls(BASE, "the-server-secret", 3600, clock)
    url = urls.url_of("b", "rec/T_room%40x_V.mp4")
    assert url == BASE + "/recordings/b/rec/T_room%2540x_V.mp4"  # a key's '%' is itself escaped
    signed = urls.signed(url)
    path, _, query = signed.partition("?")
    assert path == url and "the-server-secret" not in signed
    params = dict(urllib.parse.parse_qsl(query))
    assert int(params["Expires"]) % 60 == 0 and 3600 <= int(params["Expires"]) - clock.now < 3660
    assert urls.object_of(url) == ("b", "rec/T_room%40x_V.mp4")
    assert urls.allows("b", "rec/T_room%40x_V.mp4", params)
    assert not urls.allows("b", "rec/other.mp4", params)
    assert not urls.allows("c", "rec/T_room%40x_V.mp4", params)
    assert not urls.allows("b", "rec/T_room%40x_V.mp4", {**params, "Expires": str(int(params["Expires"]) + 60)})
    assert not urls.allows("b", "rec/T_room%40x_V.mp4", {"Expires": params["Expires"]})
    assert not RecordingUrls(BASE, "another-secret", 3600, clock).allows("b", "rec/T_room%40x_V.mp4", params)
    clock.now = int(params["Expires"]) + 1
    assert not urls.allows("b", "rec/T_room%40x_V.mp4", params)
    # a bucket's FileUrl, or another node's, is handed out as it is
    bucket_url = "https://b.s3.us-east-1.amazonaws.com/rec/a.mp4"
    assert urls.signed(bucket_url) == bucket_url
    assert urls.signed("http://elsewhere:8080/recordings/b/a.mp4") == "http://elsewhere:8080/recordings/b/a.mp4"


class Served:
    def __init__(self, root, urls: RecordingUrls):
        app = web.Application()
        app.add_routes(RecordingFiles(root, urls).routes())
        self.server = TestServer(app, host="127.0.0.1")
        self.urls = urls

    async def __aenter__(self):
        await self.server.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.server.close()

    def link(self, bucket: str, key: str, signed: bool = True) -> str:
        url = self.urls.url_of(bucket, key)
        url = self.urls.signed(url) if signed else url
        return str(self.server.make_url(url[len(self.urls.base_url):]))


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "storage"
    (root / "b" / "rec").mkdir(parents=True)
    return root


@pytest.mark.asyncio
async def test_files_are_served_with_ranges_and_their_content_types(storage):
    data = bytes(range(256)) * 40
    for extension in CONTENT_TYPES:
        (storage / "b" / "rec" / f"f.{extension}").write_bytes(data)
    async with Served(storage, RecordingUrls(BASE, "s", 600)) as http:
        for extension, content_type in CONTENT_TYPES.items():
            if extension == "m3u8":
                continue
            async with http.session.get(http.link("b", f"rec/f.{extension}")) as answer:
                assert answer.status == 200 and await answer.read() == data
                assert answer.headers["Content-Type"] == content_type, extension
                assert answer.headers["Accept-Ranges"] == "bytes"
        async with http.session.get(http.link("b", "rec/f.mp4"), headers={"Range": "bytes=100-199"}) as answer:
            assert answer.status == 206 and await answer.read() == data[100:200]
            assert answer.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        async with http.session.get(http.link("b", "rec/f.mp4"), headers={"Range": "bytes=-10"}) as answer:
            assert answer.status == 206 and await answer.read() == data[-10:]
        async with http.session.head(http.link("b", "rec/f.webm")) as answer:
            assert answer.status == 200 and int(answer.headers["Content-Length"]) == len(data)
        async with http.session.get(http.link("b", "rec/missing.mp4")) as answer:
            assert answer.status == 404


@pytest.mark.asyncio
async def test_an_unsigned_altered_or_expired_link_is_403(storage):
    (storage / "b" / "rec" / "a.mp4").write_bytes(b"media")
    (storage / "secret.txt").write_text("outside every bucket")
    clock = Clock()
    clock.now = __import__("time").time()
    async with Served(storage, RecordingUrls(BASE, "s", 600, clock)) as http:
        good = http.link("b", "rec/a.mp4")
        async with http.session.get(good) as answer:
            assert answer.status == 200
        for bad in (http.link("b", "rec/a.mp4", signed=False), good.replace("Signature=", "Signature=0"),
                    good.replace("rec/a.mp4", "rec/../a.mp4")):
            async with http.session.get(bad) as answer:
                assert answer.status == 403, bad
                assert "signature" in await answer.text()
        # even a link signed for it cannot leave the bucket (sent as it is, not normalized by the client)
        escaping = http.link("b", "../secret.txt").replace("/b/../", "/b/%2E%2E/")
        async with http.session.get(URL(escaping, encoded=True)) as answer:
            assert answer.status in (404, 405) and "outside" not in await answer.text()  # 405: no such route
        clock.now += 700  # past the expiry
        async with http.session.get(good) as answer:
            assert answer.status == 403


@pytest.mark.asyncio
async def test_a_playlist_signs_its_relative_segments_and_they_play_through_the_route(storage):
    folder = storage / "b" / "rec"
    (folder / "p.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:2.0,\np_0.ts\n#EXTINF:2.0,\np_1.ts\n"
                                   "#EXTINF:2.0,\nhttps://cdn.example/elsewhere.ts\n")
    (folder / "p_0.ts").write_bytes(b"segment zero")
    (folder / "p_1.ts").write_bytes(b"segment one")
    async with Served(storage, RecordingUrls(BASE, "s", 600)) as http:
        playlist_url = http.link("b", "rec/p.m3u8")
        async with http.session.get(playlist_url) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
            lines = (await answer.text()).splitlines()
        uris = [line for line in lines if not line.startswith("#")]
        assert uris[0].startswith("p_0.ts?Expires=") and uris[1].startswith("p_1.ts?Expires=")
        assert uris[2] == "https://cdn.example/elsewhere.ts"
        for uri, expected in zip(uris[:2], (b"segment zero", b"segment one"), strict=True):
            async with http.session.get(urllib.parse.urljoin(playlist_url, uri)) as answer:
                assert answer.status == 200 and await answer.read() == expected
                assert answer.headers["Content-Type"] == "video/mp2t"
            async with http.session.get(urllib.parse.urljoin(playlist_url, uri.split("?")[0])) as answer:
                assert answer.status == 403  # the segment without its signature
