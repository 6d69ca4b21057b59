"""Every input is built the same way: from the worker's config and one set of handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from contract.codes import InputKind
from contract.worker import WorkerConfig
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.inputs.rtp import RtpInput
from workers.inputs.rtsp import RtspInput
from workers.inputs.webrtc import WebRtcInput, WebRtcSettings
from workers.inputs.whep import WhepInput


@dataclass(frozen=True)
class InputHandlers:
    on_frame: FrameHandler
    on_sender_report: SenderReportHandler
    on_closed: Callable[[str], None]  # the publisher's session ended (WebRTC: DTLS close, consent lost)


def build_input(config: WorkerConfig, handlers: InputHandlers) -> StreamInput:
    """Not started: `await start()` binds plain RTP's ports; a WebRTC input then
    waits for `accept_offer` (WHIP) or makes an offer (WHEP); RTSP connects on `open()`."""
    if config.input_kind is InputKind.RTSP:
        if config.pull is None:
            raise ValueError("an RTSP input needs WorkerConfig.pull")
        return RtspInput(config.pull, handlers.on_frame, handlers.on_sender_report, handlers.on_closed)
    if config.input_kind in (InputKind.WHIP, InputKind.WHEP):
        settings = WebRtcSettings(host_addresses=config.webrtc_hosts, advertised_address=config.webrtc_advertised,
                                  port_range=config.webrtc_ports, jitter_max_wait_s=config.tuning.jitter_max_wait_s)
        peer_type = WhepInput if config.input_kind is InputKind.WHEP else WebRtcInput
        return peer_type(settings, handlers.on_frame, handlers.on_sender_report, handlers.on_closed)
    return RtpInput(config, handlers.on_frame, handlers.on_sender_report)
