"""The search's errors: each message says why a query cannot be answered and what to do."""

from __future__ import annotations


class ServiceError(Exception):
    """A query that cannot be answered; the message says why and what to do."""


class EmptyIndexError(ServiceError):
    pass


class ModelMissingError(ServiceError):
    pass


class BadQueryError(ServiceError):
    pass


def known_errors() -> tuple[type[BaseException], ...]:
    """The errors whose message is the whole story (a bad file, word, model or flag): a face
    shows them as one line. Only from modules already loaded, so that asking loads nothing."""
    import sys

    errors: list[type[BaseException]] = [ServiceError]
    for mod, name in [
        ("model.data.features", "DataError"),
        ("model.vocab.words", "WordsError"),
        ("model.backbones", "BackboneError"),
        ("model.checkpoint", "CheckpointError"),
        ("model.data.images", "ImageError"),
        ("model.embedders.embedder", "UnknownWordsError"),
        ("qdrant.errors", "StoreError"),
        ("ingest.pipeline", "IngestError"),
        ("ingest.people", "PeopleError"),
        ("model.detectors.dlib_faces", "FacesUnavailable"),
        ("model.embedders.clip", "ClipUnavailable"),
        ("model.data.datasets", "DatasetError"),
        ("model.device", "DeviceError"),
    ]:
        module = sys.modules.get(mod)
        if module is not None:
            errors.append(getattr(module, name))
    return tuple(errors)
