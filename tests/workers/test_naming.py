from workers import naming


def test_rule_one_example_shape():
    stem = naming.file_stem(task_id="YZ4joOE4IwmFAAAT", room_id="6677", user_id="800221", stream_id="800221",
                            media_track_type=3, begin_ms=1637753762084)
    assert stem + ".mp4" == "YZ4joOE4IwmFAAAT_6677_800221_800221_VA_20211124113602084.mp4"


def test_unsafe_characters_are_percent_encoded():
    stem = naming.file_stem(task_id="T" * 16, room_id="a/b\\c", user_id="u s", stream_id="x#?%",
                            media_track_type=2, begin_ms=0)
    assert "/" not in stem and "\\" not in stem and " " not in stem
    assert stem == "TTTTTTTTTTTTTTTT_a%2Fb%5Cc_u%20s_x%23%3F%25_V_19700101000000000"


def test_audio_letter():
    assert "_A_" in naming.file_stem(task_id="t", room_id="r", user_id="u", stream_id="s",
                                     media_track_type=1, begin_ms=0)
