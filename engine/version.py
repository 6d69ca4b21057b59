"""The running recnode's version (from its installed package metadata)."""

from __future__ import annotations

from importlib import metadata


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def version() -> str:
    return package_version("recnode")
