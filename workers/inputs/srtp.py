"""SRTP and SRTCP for one plain-RTP track (RFC 3711), keyed by SDES (RFC 4568).

Each side of an SDES exchange protects what it sends with its own key: the
publisher's key (from its offer) unprotects the SRTP media and SRTCP Sender
Reports it sends; the node's key (from its answer) protects the SRTCP the worker
sends back (PLIs). libsrtp (pylibsrtp, which aiortc already depends on) does the
work, one call per packet; it keeps a replay window and the rollover counter per
SSRC. Keys are never logged: they live in the TrackSpec (repr=False) and here.
"""

from __future__ import annotations

from pylibsrtp import Error, Policy, Session

# SDES crypto-suite names (RFC 4568 6.2) -> libsrtp profiles. Both use AES-128 in counter
# mode; _32 shortens the SRTP tag only, SRTCP keeps 80 bits (RFC 4568 6.2.2), which
# libsrtp's profile does too.
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
MASTER_KEY_AND_SALT_BYTES = 30  # 128-bit master key || 112-bit master salt, for both suites
# Packets behind the newest one still accepted (libsrtp's default is 128). The jitter buffer
# waits 250 ms for a straggler: at 8 Mb/s that is ~175 packets.
REPLAY_WINDOW = 1024
# pylibsrtp's messages for srtp_err_status_auth_fail and _replay_fail / _replay_old
AUTH_FAILURE = "authentication failure"
REPLAY_FAILURE = "replay check failed"

SrtpError = Error


class SrtpTransform:
    """The two SRTP directions of one track. `unprotect` / `unprotect_rtcp` raise
    `SrtpError` (see `is_auth_failure`) or ValueError (a datagram over 1500 bytes)."""

    def __init__(self, suite: str, remote_key: bytes, local_key: bytes):
        try:
            profile = PROFILES[suite]
        except KeyError:
            raise ValueError(f"unsupported SRTP crypto suite {suite!r}") from None
        for key in (remote_key, local_key):
            if len(key) != MASTER_KEY_AND_SALT_BYTES:
                raise ValueError(f"an SRTP master key and salt is {MASTER_KEY_AND_SALT_BYTES} bytes")
        inbound = Policy(remote_key, Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        inbound.window_size = REPLAY_WINDOW
        self._inbound = Session(inbound)
        self._outbound = Session(Policy(local_key, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        self.unprotect = self._inbound.unprotect
        self.unprotect_rtcp = self._inbound.unprotect_rtcp
        self.protect_rtcp = self._outbound.protect_rtcp


def is_auth_failure(error: SrtpError) -> bool:
    """A packet whose tag does not verify: a wrong key, or forged."""
    return str(error) == AUTH_FAILURE


def is_replay(error: SrtpError) -> bool:
    """A packet already received, or older than REPLAY_WINDOW."""
    return str(error).startswith(REPLAY_FAILURE)
