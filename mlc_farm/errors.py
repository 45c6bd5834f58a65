"""One error hierarchy: every error mlc-farm raises on purpose says what is wrong and what to do, is either
permanent (the same inputs fail the same way: never retried) or transient (a service hiccup: retried), and
carries the exit code the CLI ends with.

Exit codes: 0 done; 1 a build failed (or another permanent failure); 2 bad input; 3 a service (S3, the Hub,
the Prefect server) cannot be reached.
"""

from __future__ import annotations


class FarmError(Exception):
    """Base of the errors mlc-farm raises on purpose."""

    exit_code = 1


class PermanentError(FarmError):
    """Retrying gives the same result: fix the input, the data or the configuration."""


class TransientError(FarmError):
    """A service that failed for now (5xx, throttling, a dropped connection): worth retrying."""

    exit_code = 3


class BadInput(PermanentError):
    """Something a user gave (a matrix, a setting, an option, a path) that cannot be used."""

    exit_code = 2


class ServiceUnreachable(TransientError):
    """A service (S3, the Hub, a Prefect server) did not answer."""
