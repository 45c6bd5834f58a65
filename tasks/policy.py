"""The one retry policy of mlc-farm's tasks: retry what is known to be transient, nothing else.

An allow-list: a service that failed for now (mlc_farm's TransientError, a dropped connection, a timeout) is
retried; a toolchain failure, bad input, or a bug fails at once, since running it again gives the same result.
"""

from __future__ import annotations

from typing import Any

from mlc_farm.errors import TransientError


def transient(error: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    return isinstance(
        error,
        (TransientError, BotoConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionError, TimeoutError),
    )


def transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as e:
        return transient(e)
    return False


RETRY: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15], "retry_condition_fn": transient_only}
