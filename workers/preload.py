"""Imported once by the worker template process, before any worker is forked,
so each worker shares these pages instead of importing them again."""

import gc

import aiortc  # noqa: F401
import av  # noqa: F401
import numpy  # noqa: F401

import workers.main  # noqa: F401

gc.freeze()
