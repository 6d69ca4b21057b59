"""Imported once by the worker template process, before any worker is forked,
so each worker shares these pages instead of importing them again.

Everything a worker imports, whatever its input and outputs, belongs here: a
module imported after the fork is private to that worker (each worker logs any
such module at exit, `worker_exit` `imported_after_fork`, see workers.template).
"""

import gc
import multiprocessing.popen_forkserver  # noqa: F401  (a worker unpickles its control pipe with it)

import aiortc  # noqa: F401
import av  # noqa: F401
import av.subtitles.stream  # noqa: F401  (PyAV imports it when a container is first opened)
import cryptography.hazmat.backends.openssl  # noqa: F401  (loaded by the first DTLS handshake)
import cryptography.hazmat.primitives.serialization  # noqa: F401  (pyOpenSSL, DTLS certificates)
import numpy  # noqa: F401

import workers.main  # noqa: F401
from workers import template

template.mark_preloaded()
template.tune_malloc()
# The GC would otherwise write into every preloaded object it examines (its header),
# turning the template's shared pages into private copies in each worker.
gc.freeze()
