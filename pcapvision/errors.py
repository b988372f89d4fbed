"""The small exception tree of pcapvision.

Every error a user can cause inherits from :class:`PcapvisionError`; each also inherits from the
builtin it refines (``ValueError``, ``FileNotFoundError``...), so callers that do not know our
types still catch them sensibly. The CLI prints ``str(error)`` as one line, so messages name the
file (when there is one) and say what is wrong.
"""

from __future__ import annotations


class PcapvisionError(Exception):
    """Base class of all errors raised on purpose by pcapvision."""


class ParameterError(PcapvisionError, ValueError):
    """A parameter has a wrong type or value (a usage error: CLI exit code 2)."""


class InputNotFoundError(PcapvisionError, FileNotFoundError):
    """An input path does not exist or matches no file."""


class CaptureFormatError(PcapvisionError, ValueError):
    """A file is not a readable capture, or a record in it is broken beyond recovery."""


class DataContractError(PcapvisionError, ValueError):
    """A table or artifact does not follow the contract of the stage that reads it."""


class ModelFormatError(PcapvisionError, ValueError):
    """A model directory is missing, corrupt, foreign, or incompatible with the data given."""


class OutputWriteError(PcapvisionError, OSError):
    """An output could not be written (disk full, no permission...): the message names the output."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class LockedError(PcapvisionError, RuntimeError):
    """Another process holds the lock a job needs (the job did not start)."""


class GroundTruthFormatError(PcapvisionError, ValueError):
    """A ground-truth file (flow CSV, Zeek or Suricata log, class folder) cannot be imported."""
