"""Why an export was refused or failed. The CLI prints the message and exits non-zero."""

from __future__ import annotations


class ExportError(Exception):
    """Base class: the export did not publish a version."""


class LayoutError(ExportError):
    """The base path holds something TF Serving would misread, or the version already exists."""


class InputError(ExportError):
    """The model, labels or artifacts given to the export are unusable or disagree."""


class VerificationError(ExportError):
    """The staged SavedModel failed verification; nothing was published.

    Attributes:
        failures: the failed checks, one ``name: detail`` string each.
    """

    def __init__(self, failures: list[str]) -> None:
        super().__init__("verification failed: " + "; ".join(failures))
        self.failures = failures
