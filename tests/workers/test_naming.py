from workers import naming


def test_rule_one_example_shape():
    name = naming.file_name(task_id="YZ4joOE4IwmFAAAT", room_id="6677", user_id="800221", stream_id="800221",
                            media_track_type=3, begin_ms=1637753762084, extension="mp4")
    assert name == "YZ4joOE4IwmFAAAT_6677_800221_800221_VA_20211124113602084.mp4"


def test_unsafe_characters_are_percent_encoded():
    name = naming.file_name(task_id="T" * 16, room_id="a/b\\c", user_id="u s", stream_id="x#?%",
                            media_track_type=2, begin_ms=0, extension="mp4")
    assert "/" not in name and "\\" not in name and " " not in name
    assert name.startswith("TTTTTTTTTTTTTTTT_a%2Fb%5Cc_u%20s_x%23%3F%25_V_19700101000000000")


def test_object_key_is_folder_plus_name():
    assert naming.object_key("rec/", "f.mp4") == "rec/f.mp4"
    assert naming.object_key("", "f.mp4") == "f.mp4"
