"""The contract between the control plane (engine/) and a worker (workers/).

Both sides import this package; it imports neither of them (nor storage_adapters/):
the typed config a worker is started with, the messages on its control pipe, and
the closed code enums both sides speak. Everything here is plain, frozen data,
pickled over the pipe.
"""
