"""One small error hierarchy. Each error knows its CLI exit code and its HTTP status.

Library code raises these; only the CLI and the server turn them into words for people.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class of every error lookalike raises on purpose."""

    exit_code = 1
    http_status = 500

    @property
    def type_name(self) -> str:
        return type(self).__name__


class ConfigError(LookalikeError):
    """A flow YAML, a flag or an environment variable is wrong."""

    exit_code = 2
    http_status = 400


class ModelError(LookalikeError):
    """The model's weights are missing, unreadable, or do not match the architecture."""

    exit_code = 3
    http_status = 503


class StoreError(LookalikeError):
    """The workspace cannot be opened or written, or was built with another encoder."""

    exit_code = 4
    http_status = 409


class BadInput(LookalikeError):
    """One input (an image, a request) cannot be used. Other work goes on.

    ``reason`` is a short, stable category ("truncated image", "not an image", ...) that summaries
    group by; the message carries the details.
    """

    exit_code = 5
    http_status = 400

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class Conflict(BadInput):
    """A valid input that clashes with what the workspace holds: a name another person has, or one
    that would read as something else (an id, a keyword). Another value works."""

    http_status = 409


class NotFound(LookalikeError):
    """A file, document or resource that was asked for does not exist."""

    exit_code = 6
    http_status = 404


class FetchError(LookalikeError):
    """A download or package fetch failed: the network, the registry, a broken download, or no room
    to unpack it into the cache. Nothing is wrong with the caller's input; the message says what
    to do (go online, free space, fetch again)."""

    exit_code = 7
    http_status = 502


class ClusterError(LookalikeError):
    """A pod's process or node died, or the cluster cannot be reached or cannot place a pod.
    Nothing committed is lost; running the command again finishes the job."""

    exit_code = 8
    http_status = 503


# Document failure reasons that are not the file's: every further request would fail the same way,
# so an indexing run stops on them (after committing what it did) instead of skipping file by file.
STORE_FAILURE = "store error"
POD_FAILURE = "pod died"
MODEL_FAILURE = "model error"  # a model that cannot load (it loads at first use, in a pod)
FATAL_REASONS = (STORE_FAILURE, POD_FAILURE, MODEL_FAILURE)


def fatal_error(reason: str | None, message: str) -> LookalikeError:
    """The error that a document failed for a fatal ``reason`` stands for."""
    if reason == POD_FAILURE:
        return ClusterError(message)
    if reason == MODEL_FAILURE:
        return ModelError(message)
    return StoreError(message)
