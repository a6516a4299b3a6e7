"""Errors the store raises; the faces turn them into messages, never tracebacks."""


class StoreError(Exception):
    """Anything the vector store cannot do, with a message fit for a user."""


class IndexInUseError(StoreError):
    """The embedded index directory is held open by another store (maybe another process)."""


class StoreUnavailableError(StoreError):
    """The Qdrant server cannot be reached, or refused the request."""
