"""WaitSlot: where one task waits to be woken; a lighter ParkingLot for a single waiter.

A muxed stream has at most one receiving and one sending task (a second one is a
``BusyResourceError``) and a connection has one writer, so their waits need no queue. On
the data path every frame may wake one of them, and ParkingLot's bookkeeping (an ordered
dict, breakers) shows in the profile; a slot is one attribute.
"""

from __future__ import annotations

import trio

__all__ = ["WaitSlot"]


class WaitSlot:
    """A place where at most one task waits until :meth:`wake`."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    def __bool__(self) -> bool:
        return self._task is not None

    async def wait(self) -> None:
        """Wait until woken (a checkpoint; cancellable)."""
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting here")
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        """Wake the waiting task, if any."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
