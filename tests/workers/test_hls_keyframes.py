"""HLS segments on time with publishers that send key frames only when asked: the
writer knows where FFmpeg's muxer will cut, and the recording asks for a key frame
once per segment whose end passed without one."""

from dataclasses import replace

from contract.codes import MediaKind
from testkit.media import make_test_media
from tests.workers.test_recording import SPEC, frames, run_recording
from workers.outputs.hls import SegmentCuts

SECOND = 90000


def test_cuts_aim_at_multiples_of_the_target_and_ask_once_per_segment():
    cuts = SegmentCuts(2)
    asked = []
    for pts, key in [(0, True), (SECOND, False), (2 * SECOND - 1, False), (2 * SECOND, False),
                     (2 * SECOND + 3000, False), (2 * SECOND + 6000, True),  # asked for: the first segment ends
                     (3 * SECOND, False), (4 * SECOND, False), (4 * SECOND + 3000, False), (5 * SECOND, False)]:
        cuts.on_video(pts, key)
        if cuts.keyframe_due():
            asked.append(pts)
    # the second segment began at 2.07 s but ends at 4 s, where FFmpeg aims; asked once, not on every frame
    assert asked == [2 * SECOND, 4 * SECOND]


def test_a_key_frame_before_the_end_does_not_cut():
    cuts = SegmentCuts(2)
    cuts.on_video(0, True)
    cuts.on_video(SECOND, True)  # too early for the muxer: no cut
    cuts.on_video(2 * SECOND, False)
    assert cuts.keyframe_due()


def record_hls(uploader, media, fragment_seconds, answers=False):
    """(media time of the latest video frame at each key-frame request, the segments written).
    With `answers`, the publisher sends a key frame only when asked (the clip must be all
    key frames: the others go out flagged as delta frames), the next frame after a request."""
    asked, latest = [], [0.0]

    def publisher():
        for frame in frames(media):
            if frame.kind is MediaKind.VIDEO:
                if answers and frame.arrival > 10:
                    frame = replace(frame, keyframe=bool(asked) and asked[-1] == latest[-1])
                latest.append(round(frame.arrival - 10, 3))
            yield frame

    spec = replace(SPEC, output_format="hls", fragment_seconds=fragment_seconds)
    objects, _, _ = run_recording(publisher(), uploader, spec=spec, request_keyframe=lambda: asked.append(latest[-1]))
    return asked, sorted(k for k in objects if k.endswith(".ts"))


def test_nobody_answering_is_asked_once_per_segment(uploader):
    media = make_test_media(7.0, keyint=300)  # one key frame, at 0: a browser that is not asked
    asked, segments = record_hls(uploader, media, 2)
    assert asked == [2.0]  # and no more: the input repeats its request until a key frame comes
    assert len(segments) == 1  # nobody answered: the muxer could not cut


def test_a_publisher_that_answers_is_asked_at_every_segment_end(uploader):
    media = make_test_media(7.0, keyint=1)
    asked, segments = record_hls(uploader, media, 2, answers=True)
    assert asked == [2.0, 4.0, 6.0] and len(segments) == 4


def test_key_frames_on_time_need_no_request(uploader):
    media = make_test_media(7.0, keyint=30)  # a key frame every second, so on every segment end
    asked, segments = record_hls(uploader, media, 2)
    assert asked == [] and len(segments) == 4
