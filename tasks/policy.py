"""The one retry policy of mlc-farm's tasks: retry what is known to be transient, nothing else.

An allow-list: a service that failed for now (mlc_farm's TransientError, a dropped connection, a timeout) is
retried; a toolchain failure, bad input, or a bug fails at once, since running it again gives the same result.
"""

from __future__ import annotations

from typing import Any

from mlc_farm.errors import is_transient


def transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as e:
        return is_transient(e)
    return False


# Tasks that do not run the toolchain. A build retries its own uploads from the outputs on disk (build.py),
# so an outage never runs a conversion or a compile twice.
RETRY: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15], "retry_condition_fn": transient_only}
