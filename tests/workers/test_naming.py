import re
import string
from hashlib import sha256

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine import defaults, models
from engine.errors import InvalidParameter
from workers import naming
from workers.outputs.hls import SEGMENT_EXTENSION
from workers.outputs.registry import SEPARATE_AUDIO_WRITERS, WRITERS, WebmWriter

SPECIALS = "~!@#$%^&*()_+=-`;',.<>/\\"
ID_ALPHABET = string.ascii_letters + string.digits + SPECIALS
MAX_ID = defaults.IDENTIFIER_MAX_BYTES
# any legal id, and ones near the limit (plain or all special, tripled when encoded)
identifiers = st.one_of(st.text(ID_ALPHABET, min_size=1, max_size=MAX_ID),
                        st.text(ID_ALPHABET, min_size=MAX_ID - 32, max_size=MAX_ID),
                        st.text(SPECIALS, min_size=MAX_ID // 2, max_size=MAX_ID))
task_ids = st.text(string.ascii_letters + string.digits, min_size=16, max_size=16)
# OutputFolder: any characters but control ones and '/' inside a segment (multi-byte
# UTF-8 included), as long as the API takes it.
folder_characters = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\")
segments = st.text(folder_characters, min_size=1, max_size=defaults.OUTPUT_FOLDER_SEGMENT_MAX_BYTES)
MAX_PREFIX = 128  # a last folder name (OutputFolder's trailing '/' is implied)
name_prefixes = st.one_of(st.just(""), st.text(folder_characters, max_size=MAX_PREFIX),
                          st.text(string.ascii_letters, min_size=MAX_PREFIX - 8, max_size=MAX_PREFIX))
# the largest millisecond a yyyy stamp holds (9999-12-31T23:59:59.999Z)
begin_ms = st.integers(0, 253402300799999)


def legal_folder(dirs: list[str], prefix: str) -> str:
    folder = "".join(d + "/" for d in dirs) + prefix
    try:
        parsed = models.Fields({"OutputFolder": folder}).string("OutputFolder", max_len=512)
        return models.parse_output_folder(parsed, "OutputFolder")
    except InvalidParameter:
        assume(False)


folders = st.builds(legal_folder, st.lists(segments, max_size=4), name_prefixes)


def stem(room="r", user="u", stream="s", task="T" * 16, folder="", track=3, begin=0):
    return naming.file_stem(task_id=task, room_id=room, user_id=user, stream_id=stream, media_track_type=track,
                            begin_ms=begin, folder=folder)


def test_rule_one_example_shape():
    assert stem("6677", "800221", "800221", "YZ4joOE4IwmFAAAT", begin=1637753762084) + ".mp4" == \
        "YZ4joOE4IwmFAAAT_6677_800221_800221_VA_20211124113602084.mp4"


def test_unsafe_characters_are_percent_encoded():
    name = stem("a/b\\c", "u s", "x#?%", track=2)
    assert "/" not in name and "\\" not in name and " " not in name
    assert name == "TTTTTTTTTTTTTTTT_a%2Fb%5Cc_u%20s_x%23%3F%25_V_19700101000000000"


def test_audio_letter():
    assert "_A_" in stem(track=1)


def test_long_ids_are_cut_to_a_stable_form():
    """The rule, pinned: the same ids give this name in every process and version."""
    # 201 bytes for the ids (255 - task id - separators - type - UTC - "_<n>.ts"): "s" takes 1,
    # the two others are cut to 100 each; the cut never splits a %2F
    assert stem("r" * 128, "/" * 128, "s") == (
        "TTTTTTTTTTTTTTTT_" + "r" * 83 + "+1e85ca2d9643b6b8_" + "%2F" * 27 + "+a85b73755224ef42_s_VA_19700101000000000")


@settings(max_examples=400, deadline=None)
@given(task_ids, identifiers, identifiers, identifiers, folders, st.sampled_from([1, 2, 3]), begin_ms)
def test_every_legal_input_fits_a_file_name_and_an_object_key(task, room, user, stream, folder, track, begin):
    name = stem(room, user, stream, task, folder, track, begin)
    longest = f"{name}_4294967295.{SEGMENT_EXTENSION}"  # an HLS segment; the other extensions are shorter
    assert len((naming.name_prefix(folder) + longest).encode()) <= 255
    assert len((folder + longest).encode()) <= 1024
    assert "/" not in name and "\\" not in name
    assert name == stem(room, user, stream, task, folder, track, begin)  # stable


@settings(max_examples=400, deadline=None)
@given(identifiers, identifiers, identifiers, identifiers, st.integers(0, 2), folders)
def test_distinct_ids_give_distinct_names(first, second, other_a, other_b, position, folder):
    assume(first != second)
    ids = [other_a, other_b]
    one, two = list(ids), list(ids)
    one.insert(position, first)
    two.insert(position, second)
    assert stem(*one, folder=folder) != stem(*two, folder=folder)


@settings(max_examples=300, deadline=None)
@given(st.text(ID_ALPHABET, min_size=MAX_ID - 40, max_size=MAX_ID - 1), st.text(ID_ALPHABET, min_size=1, max_size=40),
       st.text(ID_ALPHABET, min_size=1, max_size=40), identifiers, st.integers(0, 2), folders)
def test_ids_that_share_a_long_start_give_distinct_names(start, end_one, end_two, other, position, folder):
    first, second = (start + end_one)[:MAX_ID], (start + end_two)[:MAX_ID]
    assume(first != second)
    one, two = [other, other], [other, other]
    one.insert(position, first)
    two.insert(position, second)
    assert stem(*one, folder=folder) != stem(*two, folder=folder)


@settings(max_examples=200, deadline=None)
@given(identifiers, identifiers, identifiers, folders)
def test_a_cut_id_keeps_whole_escapes_and_its_start(room, user, stream, folder):
    name = stem(room, user, stream, folder=folder)
    for original in (room, user, stream):
        encoded = naming.escape(original)
        if encoded in name:
            continue
        before_mark = name[: name.index(naming.CUT_MARK + sha256(original.encode()).hexdigest()[:16])]
        kept = next(encoded[:n] for n in range(len(encoded), -1, -1) if before_mark.endswith(encoded[:n]))
        assert re.fullmatch(r"([A-Za-z0-9._~-]|%[0-9A-F]{2})*", kept), kept  # never half an escape


def test_ids_that_fit_are_not_cut():
    """The cut applies only when the whole name would not fit."""
    longest_uncut = naming.identifier_budget("T" * 16, "") - 2
    assert stem("r" * longest_uncut, "u", "s") == f"TTTTTTTTTTTTTTTT_{'r' * longest_uncut}_u_s_VA_19700101000000000"
    assert naming.CUT_MARK in stem("r" * (longest_uncut + 1), "u", "s")


def test_every_writers_suffix_is_within_the_budgeted_one():
    writers = {*WRITERS.values(), *SEPARATE_AUDIO_WRITERS.values(), WebmWriter}
    assert all(len(f".{writer.extension}") <= naming.LONGEST_SUFFIX_BYTES for writer in writers)


@pytest.mark.parametrize("folder, message", [
    ("a" * 256 + "/", "a folder name is longer than 255 bytes"),
    ("rec/" + "é" * 128, "a folder name is longer than 255 bytes"),  # its '/' is implied: a folder too
])
def test_output_folders_that_cannot_hold_a_file_are_refused(folder, message):
    with pytest.raises(InvalidParameter, match=re.escape(message)):
        models.parse_output_folder(folder, "RecordOutputParams.OutputFolder")
