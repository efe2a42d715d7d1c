"""The engine's own exceptions: each message names the problem and the fix."""


class EmbeddingChangeError(Exception):
    """Base class: anything the engine refuses, with a message for the analyst.

    The message is masked (core.credentials): no secret the engine has seen is ever shown."""

    def __init__(self, *args):
        from .credentials import mask

        super().__init__(*(mask(a) if isinstance(a, str) else a for a in args))


class StoreError(EmbeddingChangeError):
    """The input store cannot be opened or is not an embedding cube."""


class WindowError(EmbeddingChangeError):
    """The requested box does not select any pixel of the store."""


class OutputError(EmbeddingChangeError):
    """The output cannot be written where asked."""


class ParameterError(EmbeddingChangeError):
    """A method, metric, year or option the engine does not know."""


class CancelledError(EmbeddingChangeError):
    """The run was cancelled; no output is left behind."""
