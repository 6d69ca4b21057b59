"""The worker template's memory settings, which every forked worker inherits."""

import subprocess
import sys

# Run in a fresh interpreter: malloc's settings are per process and pytest's must not change.
PROBE = r"""
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from workers.template import tune_malloc
    tune_malloc()
freed = bytearray(4 * 1024 * 1024)
del freed  # a large mmapped block freed: glibc alone now raises its mmap threshold to 4 MB
before = libc.mallinfo2().hblkhd
block = bytearray(300 * 1024)  # a key frame's size
print(libc.mallinfo2().hblkhd - before)
"""


def mmapped_bytes_for_a_300_kib_block(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout)


def test_large_blocks_stay_mmapped_after_a_larger_one_was_freed():
    """A worker's large short-lived buffers are mmapped (and given back when freed) even
    after glibc would have moved its threshold up, instead of fragmenting the brk heap."""
    assert mmapped_bytes_for_a_300_kib_block("default") == 0  # what the test guards against
    assert mmapped_bytes_for_a_300_kib_block("tuned") >= 300 * 1024
