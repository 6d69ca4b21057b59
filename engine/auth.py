"""Request signatures: md5(AppId + SignatureNonce + ServerSecret + Timestamp), a
10-minute clock window, and a cache of nonces already used inside that window."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping

from engine import defaults, errors

_NONCE = re.compile(r"^[0-9A-Za-z]{1,64}$")
_UINT32_MAX = 2**32 - 1


def sign(app_id: int | str, nonce: str, secret: str, timestamp: int | str) -> str:
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode()).hexdigest()


def signed_params(action: str, app_id: int, secret: str, timestamp: int | None = None,
                  nonce: str | None = None) -> dict[str, str]:
    """The query parameters of a signed API call, as a client sends them."""
    nonce = nonce or secrets.token_hex(8)
    timestamp = int(time.time() if timestamp is None else timestamp)
    return {"Action": action, "AppId": str(app_id), "SignatureNonce": nonce, "Timestamp": str(timestamp),
            "Signature": sign(app_id, nonce, secret, timestamp), "SignatureVersion": defaults.SIGNATURE_VERSION}


def signed_query(action: str, app_id: int, secret: str, timestamp: int | None = None) -> str:
    return urllib.parse.urlencode(signed_params(action, app_id, secret, timestamp))


class NonceCache:
    """Nonces seen within the signature window; a replay inside it is refused."""

    def __init__(self, window_s: int = defaults.SIGNATURE_WINDOW_S, max_entries: int = 1_000_000):
        self._window_s = window_s
        self._max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check_and_add(self, nonce: str, now: float) -> bool:
        self._expire(now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        if len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # Entries are kept twice the window: a timestamp may be up to one window
        # in the future, so its nonce must stay remembered that much longer.
        horizon = now - 2 * self._window_s
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            self._seen.popitem(last=False)


class Authenticator:
    def __init__(self, app_id: int, secret: str, nonces: NonceCache | None = None, clock=time.time):
        self._app_id = app_id
        self._secret = secret
        self._nonces = nonces or NonceCache()
        self._clock = clock

    def verify(self, query: Mapping[str, str]) -> None:
        """Raise the ApiError matching the first problem of the query's signature fields."""
        app_id_text = query.get("AppId", "")
        if not app_id_text.isdigit() or int(app_id_text) > _UINT32_MAX:
            raise errors.AppIdMalformed(f"AppId malformed: {app_id_text!r}")
        nonce = query.get("SignatureNonce", "")
        if not nonce:
            raise errors.NonceEmpty()
        timestamp_text = query.get("Timestamp", "")
        if not timestamp_text:
            raise errors.TimestampEmpty()
        try:
            timestamp = int(timestamp_text)
        except ValueError:
            raise errors.TimestampMalformed() from None
        signature = query.get("Signature", "")
        if not signature:
            raise errors.SignatureEmpty()
        version = query.get("SignatureVersion", "")
        if not version:
            raise errors.SignatureVersionEmpty()
        if version != defaults.SIGNATURE_VERSION:
            raise errors.SignatureVersionNotSupported(f"SignatureVersion {version!r} not supported")
        now = self._clock()
        if abs(now - timestamp) > defaults.SIGNATURE_WINDOW_S:
            raise errors.SignatureExpired()
        if not _NONCE.match(nonce):
            raise errors.SignatureInvalid("SignatureNonce malformed")
        expected = sign(app_id_text, nonce, self._secret, timestamp_text)
        if int(app_id_text) != self._app_id or not hmac.compare_digest(expected, signature.lower()):
            raise errors.SignatureInvalid()
        if not self._nonces.check_and_add(nonce, now):
            raise errors.SignatureInvalid("SignatureNonce already used")
