"""incident-worker: webhooks in, incidents by the severity matrix, approved playbooks run once."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("incident-worker")
except _metadata.PackageNotFoundError:  # a checkout that was never installed
    __version__ = "unknown"
