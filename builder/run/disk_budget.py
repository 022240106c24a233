"""The disk as a scheduled resource: a build reserves the bytes it is estimated to add
(:func:`builder.engine.disk.image_size` times the image store's measured factors,
:class:`builder.engine.disk.Factors`) before it starts, and waits while the file system's free
bytes, less what the builds in flight reserved and a floor, cannot hold it. It goes whenever no
other build is in flight: what one build needs on its own was checked before the run started
(:func:`builder.run.space.check`), unless a cache prune that may give space back is pending:
then it waits for that. A build's reservation ends with the build; the bytes it left are then in
the free figure. Space comes back when ``--prune-cache`` removes a finished build's BuildKit cache,
and when the run removes the local copies of a finished image that the registry holds and no
pending child needs (:class:`builder.run.space.LocalCopyRemover`): :meth:`DiskBudget.expect_space`
when one is queued, :meth:`DiskBudget.freed` when it ended (the waiting builds look at once;
otherwise they look again every ``poll`` seconds). A queued prune runs once a build waits for
space, or when the run's lanes ended (:meth:`DiskBudget.wait_for_need`): a prune holds back every
new build until the running ones ended, so it runs when it is needed. A queued removal runs only
once a build waits for space (or the free bytes, less the reservations of the builds in flight,
fall below the floor), never at the run's end: a run with enough disk keeps its local images.
With a growth ceiling (``--max-disk-growth``) the floor is the free bytes at the run's start less
the growth (:func:`growth_floor`): builds wait, and queued prunes and removals run, once the growth
the builds in flight may reach passes it.

:class:`DiskWatch` samples the file system's used bytes while the run goes on, for the peak and
the end state the summary prints.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from builder.matrix.platform import Platform

#: Free bytes a reservation never counts on: the Engine's own bookkeeping, logs, the build folder.
FLOOR = 2_000_000_000

#: Seconds between looks at the free bytes while a build waits for space.
POLL = 15.0


def growth_floor(free: int, max_growth: int | None, floor: int = FLOOR) -> int:
    """The floor of a run (bytes) whose file system may grow by at most ``max_growth`` bytes over
    its start, when ``free`` bytes are free at the start: ``free - max_growth``, never below ``floor``
    (:data:`FLOOR`); ``floor`` itself without a ``max_growth``. A build then waits while the bytes
    it needs would take the file system past the growth (:class:`DiskBudget`)."""
    return floor if max_growth is None else max(floor, free - max_growth)


class DiskBudget:
    """Reservations of disk bytes for builds in flight on one file system. ``needs`` maps
    ``(image name, platform)`` to the bytes its build is estimated to add
    (:func:`builder.run.space.build_needs`; a build not in it reserves nothing); ``free()`` gives the
    file system's free bytes now (:func:`free_of`); ``say`` gets one line when a build starts to
    wait. Thread-safe: each build's worker calls :meth:`reserve`."""

    def __init__(self, needs: dict[tuple[str, Platform], int], free: Callable[[], int],
                 say: Callable[[str], None] = lambda line: None, floor: int = FLOOR, poll: float = POLL):
        self.needs, self._free, self._say, self.floor, self.poll = needs, free, say, floor, poll
        self._held: dict[int, int] = {}
        self._next = 0
        self._pending = 0
        self._waiting = 0
        self._closing = False
        self._aborted = False
        self._cond = threading.Condition()
        self.waits = 0

    def waiting(self) -> bool:
        """True while a build waits for space (:meth:`reserve`): the disk is short now, so a prune
        may take what it would keep on a disk with room (:meth:`builder.run.space.CachePruner.after_image`)."""
        with self._cond:
            return self._waiting > 0

    def available(self) -> int:
        """Bytes a new reservation may take now: free, less the floor and every reservation held."""
        with self._cond:
            return self._available()

    def _available(self) -> int:
        return self._free() - self.floor - sum(self._held.values())

    def _must_wait(self, need: int) -> bool:
        # Another build holds bytes, or a prune may give some back, and the disk cannot hold ``need``.
        return (need > 0 and not self._aborted and (any(self._held.values()) or self._pending > 0)
                and need > self._available())

    @contextlib.contextmanager
    def reserve(self, name: str, platform: Platform) -> Iterator[None]:
        """Hold the bytes the build of ``name`` for ``platform`` needs (:attr:`needs`) for the
        block. Waits while another build is in flight, or a cache prune is pending, and the bytes
        available (:meth:`available`) are fewer; never waits when neither is the case, when it
        needs nothing (an unchanged build), or once the run is stopping (:meth:`close` with
        ``abort``: the build then sees the stop itself)."""
        need = max(0, self.needs.get((name, platform), 0))
        with self._cond:
            if self._must_wait(need):
                self.waits += 1
                self._say(f"{name} ({platform}) waits for disk space: needs about {need / 1e9:.1f} GB, "
                          f"{max(0, self._available()) / 1e9:.1f} GB are free beside the builds in flight")
                self._waiting += 1
                self._cond.notify_all()  # a prune waiting for need goes now
                try:
                    while self._must_wait(need):
                        self._cond.wait(self.poll)
                finally:
                    self._waiting -= 1
            key, self._next = self._next, self._next + 1
            self._held[key] = need
        try:
            yield
        finally:
            with self._cond:
                del self._held[key]
                self._cond.notify_all()

    def wait_for_need(self, at_close: bool = True) -> bool:
        """Block a queued cache prune until a build waits for space, the free bytes less every
        reservation fall below the floor (pushes and smoke tests write too), or the run ends
        (:meth:`close`): a prune stops every new build until the running ones ended
        (:meth:`builder.run.context.Events.no_builds`), so it runs only when space is needed.
        False when the run is stopping (``close(abort=True)``): the prune is not to run; without
        ``at_close``, False too once the run's lanes ended (a removal of local copies,
        :class:`builder.run.space.LocalCopyRemover`, runs only while a build may need the space)."""
        with self._cond:
            while not (self._waiting > 0 or self._closing or self._available() < 0):
                self._cond.wait(self.poll)  # free bytes below the floor (a push, a test) count as need too
            return not self._aborted and (at_close or not self._closing)

    def close(self, abort: bool = False) -> None:
        """The run's lanes ended: prunes still queued run now (:meth:`wait_for_need`); with
        ``abort`` (Ctrl-C, an error) they are dropped, and no build waits for space any more."""
        with self._cond:
            self._closing, self._aborted = True, self._aborted or abort
            self._cond.notify_all()

    def expect_space(self) -> None:
        """A cache prune (or a removal of local copies) was queued: until its :meth:`freed`, a build
        that does not fit waits for it even when no other build is in flight."""
        with self._cond:
            self._pending += 1

    def freed(self) -> None:
        """A queued cache prune (or removal) ended, whether or not it ran or freed bytes: waiting
        builds look at the free bytes now."""
        with self._cond:
            self._pending = max(0, self._pending - 1)
            self._cond.notify_all()


def free_of(path: Path) -> Callable[[], int]:
    """A ``free()`` for :class:`DiskBudget`: the free bytes of the file system holding ``path``."""
    return lambda: shutil.disk_usage(path).free


class DiskWatch:
    """Samples the used bytes of the file system holding ``path`` every ``every`` seconds from
    :meth:`start` to :meth:`stop` (and once at each), for :meth:`line`: the peak growth and the
    end state over the start, in bytes (``shutil.disk_usage``; other processes' writes count too)."""

    def __init__(self, path: Path, every: float = 5.0, used: Callable[[], int] | None = None):
        self._used = used or (lambda: shutil.disk_usage(path).used)
        self.path, self.every = path, every
        self.start_bytes = self.peak_bytes = self.end_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first sample and sample in a daemon thread until :meth:`stop`."""
        self.start_bytes = self.peak_bytes = self.end_bytes = self._used()
        self._thread = threading.Thread(target=self._loop, name="disk-watch", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        now = self._used()
        self.peak_bytes, self.end_bytes = max(self.peak_bytes, now), now

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> None:
        """Stop sampling and take the last sample (the end state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def line(self) -> str:
        """``disk (<path>'s file system): peak +X GB, end +Y GB over the run's start``."""
        return (f"disk ({self.path}'s file system): peak {(self.peak_bytes - self.start_bytes) / 1e9:+.1f} GB, "
                f"end {(self.end_bytes - self.start_bytes) / 1e9:+.1f} GB over the run's start")
