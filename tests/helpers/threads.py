"""Run one job per thread, all at once, the way concurrent app users call the shared models."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(job: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``job(0) .. job(count - 1)`` in ``count`` threads released together; return what they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            job(index)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller, which asserts on it)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
