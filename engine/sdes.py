"""SDES (RFC 4568): the `a=crypto` attributes of a plain-RTP offer and the answer's own.

An offer with `RTP/SAVP` (or `RTP/SAVPF`) carries, per m-line, one or more
`a=crypto:<tag> <suite> inline:<base64 master key || salt>[|lifetime]`; the node takes
the first one whose suite it supports and answers with the same tag and suite and a
key of its own. The offerer's key protects what the offerer sends (RFC 4568 6.1), so
the worker decrypts the publisher's SRTP and SRTCP with it; the node's key protects
the SRTCP the worker sends (PLIs).

The node's key is derived, not drawn at random: HMAC-SHA256 keyed with the node's
secret over the offerer's key and the m-line's index. A node restored after a restart
reads the stored offer and so answers with the same key, which the publisher (that
never learnt of the restart) still uses to check our PLIs; a fresh offer key gives a
fresh answer key, and nobody without the node's secret can compute it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from workers.inputs.srtp import MASTER_KEY_AND_SALT_BYTES, PROFILES

_DERIVATION_LABEL = b"recnode SDES answer key v1\x00"
_INLINE = re.compile(r"inline:\S+")
_LIFETIME = re.compile(r"(2\^\d{1,2}|\d{1,20})")


class CryptoError(ValueError):
    """An a=crypto attribute the node cannot use (the message names it, key hidden)."""


@dataclass(frozen=True)
class Crypto:
    tag: int
    suite: str
    key: bytes = field(repr=False)  # master key || master salt


def shown(line: str) -> str:
    """An SDP line as it may appear in an error or a log: key material hidden."""
    return _INLINE.sub("inline:<hidden>", line)


def choose_crypto(lines: list[str]) -> Crypto | None:
    """The first `a=crypto` line (full text) whose suite the node supports, parsed;
    None when no line has a supported suite. A supported line that is malformed is an
    error rather than skipped: the publisher meant it."""
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[1] not in PROFILES:
            continue
        return _parse(line, parts)
    return None


def _parse(line: str, parts: list[str]) -> Crypto:
    tag_text = parts[0].partition(":")[2]
    if not (tag_text.isdigit() and len(tag_text) <= 9):
        raise CryptoError(f"the crypto tag must be 1-9 digits: {shown(line)!r}")
    if len(parts) < 3:
        raise CryptoError(f"no key parameters: {shown(line)!r}")
    if len(parts) > 3:
        raise CryptoError(f"SDES session parameters ({' '.join(parts[3:])}) are not supported: {shown(line)!r}")
    key_params = parts[2]
    if ";" in key_params:
        raise CryptoError(f"more than one key (MKI) is not supported: {shown(line)!r}")
    if not key_params.startswith("inline:"):
        raise CryptoError(f"the key must be inline: {shown(line)!r}")
    key_text, *extras = key_params[len("inline:"):].split("|")
    if len(extras) > 1 or (extras and ":" in extras[0]):
        raise CryptoError(f"an MKI is not supported: {shown(line)!r}")
    if extras and not _LIFETIME.fullmatch(extras[0]):
        raise CryptoError(f"malformed key lifetime: {shown(line)!r}")
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"the key is not base64: {shown(line)!r}") from None
    if len(key) != MASTER_KEY_AND_SALT_BYTES:
        raise CryptoError(f"{parts[1]} needs a {MASTER_KEY_AND_SALT_BYTES}-byte master key and salt, "
                          f"got {len(key)}: {shown(line)!r}")
    return Crypto(int(tag_text), parts[1], key)


def answer_key(secret: bytes, offer: Crypto, index: int) -> bytes:
    """The node's master key || salt for the m-line `index` (see the module docstring)."""
    digest = hmac.new(secret, _DERIVATION_LABEL + bytes([index]) + offer.key, hashlib.sha256).digest()
    return digest[:MASTER_KEY_AND_SALT_BYTES]


def answer_line(tag: int, suite: str, key: bytes) -> str:
    return f"a=crypto:{tag} {suite} inline:{base64.b64encode(key).decode()}"
