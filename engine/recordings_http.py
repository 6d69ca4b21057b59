"""GET /recordings/<Bucket>/<key>: the node's own recordings (Vendor 0) over HTTP.

Only with a valid signed link (engine.signed_urls): an unsigned, altered or
expired one is 403. Byte ranges, conditional requests and HEAD come from
aiohttp's FileResponse; content types are set from the extension. A file being
recorded is served as far as it is written (a fragmented MP4 plays up to its
last fragment; on the node's disk an HLS playlist is rewritten after every
segment, so it plays live). A playlist is served with each relative segment
line signed like the playlist itself, so a player follows it through this
route with no further links.
"""

from __future__ import annotations

import asyncio
import posixpath
from pathlib import Path

from aiohttp import web

from engine.signed_urls import ROUTE, RecordingUrls
from storage_adapters.base import InvalidObjectKey
from storage_adapters.local import LocalAdapter

CONTENT_TYPES = {
    "mp4": "video/mp4", "m4a": "audio/mp4", "flv": "video/x-flv", "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t", "aac": "audio/aac", "webm": "video/webm", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "mp3": "audio/mpeg",
}
PLAYLIST_READS = 5
PLAYLIST_REREAD_S = 0.02
FORBIDDEN = "this link is not signed, or its signature is wrong or has expired\n"
CORS = {
    # The signature is the capability: any page may play a link it was given.
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges",
}


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def sign_playlist(text: str, bucket: str, playlist_key: str, urls: RecordingUrls) -> str:
    """Each segment line relative to the playlist gets its own signature (a relative
    URL resolves without the playlist's query)."""
    folder = posixpath.dirname(playlist_key)
    lines = []
    for line in text.splitlines():
        uri = line.strip()
        if uri and not uri.startswith("#") and "://" not in uri and not uri.startswith("/") and "?" not in uri:
            line = f"{uri}?{urls.query(bucket, posixpath.join(folder, uri) if folder else uri)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class RecordingFiles:
    def __init__(self, storage_root: Path, urls: RecordingUrls):
        self._root = storage_root
        self._urls = urls

    def routes(self) -> list[web.RouteDef]:
        return [web.get(ROUTE + "{bucket}/{key:.+}", self.get), web.options(ROUTE + "{tail:.*}", self.preflight)]

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS, "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                                                 "Access-Control-Allow-Headers": "Range"})

    def _path(self, bucket: str, key: str) -> Path | None:
        try:
            path = LocalAdapter(self._root, bucket).path_of(key)
        except InvalidObjectKey:
            return None
        return path if path.is_file() else None

    @staticmethod
    async def _read_playlist(path: Path) -> str:
        """A live playlist is rewritten in place (truncated, then written in one
        write): a read in between finds it empty, so it is read again."""
        for _ in range(PLAYLIST_READS):
            text = await asyncio.to_thread(path.read_text, errors="replace")
            if text.startswith("#EXTM3U"):
                break
            await asyncio.sleep(PLAYLIST_REREAD_S)
        return text

    async def get(self, request: web.Request) -> web.StreamResponse:
        bucket, key = request.match_info["bucket"], request.match_info["key"]
        if not self._urls.allows(bucket, key, request.query):
            return web.Response(status=403, text=FORBIDDEN, headers=CORS)
        path = await asyncio.to_thread(self._path, bucket, key)
        if path is None:
            return web.Response(status=404, text="no such recording\n", headers=CORS)
        headers = {**CORS, "Content-Type": content_type(key), "Cache-Control": "private, no-cache"}
        if key.endswith(".m3u8"):
            text = await self._read_playlist(path)
            return web.Response(text=sign_playlist(text, bucket, key, self._urls), headers=headers)
        return web.FileResponse(path, headers=headers)
