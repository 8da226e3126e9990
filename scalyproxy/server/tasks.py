"""Background tasks that belong to an owner (a proxy, a fleet's supervisor): kept until they
end, their failures logged, cancelled together at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from scalyproxy.logs import log


class TaskOwner:
    tasks: set[asyncio.Task[Any]]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal_error", error=repr(task.exception()))
