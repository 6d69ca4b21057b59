"""A WHEP server for tests, in its own process: see ``testkit.whep.server``."""

from testkit.whep.server import ServerRecord, ServerSpec, read_record, start_server

__all__ = ["ServerRecord", "ServerSpec", "read_record", "start_server"]
