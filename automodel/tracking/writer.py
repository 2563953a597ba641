"""The background thread that makes every MLflow write of a process, in order and in batches.

The trial's thread only puts ops on a queue (`runs.py` builds them):

    ("start", n, spec, metrics)     open trial n's run (spec: what the sink needs, with params)
    ("metrics", n, metrics)         metrics as (key, value, timestamp_ms, step) tuples
    ("end", n, spec, ending)        end it: ending = (status, end_ms, tags, metrics); opens the
                                    run first if no "start" came (a trial that failed early)
    ("call", fn)                    run fn() here, before the ops queued after it: opening the
                                    store off the trial's path (`Writer.open`). If it raises,
                                    every later write is dropped (flush and close still
                                    answer): a store that cannot be opened is the caller's
                                    error to report, once

The thread gathers ops for up to GATHER_SECONDS, merges each trial's metrics into one write,
and calls a sink (`runs.Sink`; nothing here knows MLflow):

    sink.create(spec) -> run_id     sink.log(run_id, metrics, params)
    sink.end(run_id, *ending)       sink.abandon(run_id, status, reason)

A write that fails twice is dropped with a warning: the search matters more than its record.
"""

from __future__ import annotations

import queue
import threading
import time

GATHER_SECONDS = 0.5  # fast epochs share a write; a slow epoch is visible this soon after it ends
FLUSH_SECONDS = 120.0  # the longest flush() and close() wait for queued writes
RETRY_SECONDS = 0.5
# An opening queued by `open` waits for `allow_open`, but no longer than this.
OPEN_DELAY_SECONDS = 10.0


class Writer:
    """One daemon thread, its queue, and the map of trial numbers to run ids.

    Who waits for what:
      - the trial's thread never waits: `put` appends an op and returns;
      - the writer thread waits for ops; an opening queued by `open` first waits for
        `allow_open` (the first epoch ended) or OPEN_DELAY_SECONDS, whichever comes first;
      - `wait_opened` (the end of a search) waits until that opening has run or failed;
      - `flush` and `close` wait until every op queued before them is written.
    Only the thread touches `runs` and `unended`.
    """

    def __init__(self, sink, warn):
        self.sink = sink
        self.warn = warn
        self.seconds = 0.0  # wall time spent writing
        self.cpu_seconds = 0.0  # CPU time of the thread: what it takes from training on a CPU
        self.runs: dict[int, str] = {}
        self.unended: set[int] = set()  # trials whose run was created and not ended
        self.error: Exception | None = None  # what a "call" raised: later writes are dropped
        self._may_open = threading.Event()  # set: an opening need not wait any longer
        self._opened = threading.Event()  # set: no opening queued or running
        self._opened.set()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="automodel-tracking", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def put(self, op: tuple) -> None:
        self._queue.put(op)

    def open(self, opening) -> None:
        """Queue `opening()` (opening the store) ahead of every op put after it.

        It runs once `allow_open` is called or after OPEN_DELAY_SECONDS: opening is seconds of
        Python, and in a thread it would hold the interpreter lock half the time while the
        first trial starts up, which is Python too, gaining nothing. What it raises is kept
        in `error`.
        """
        self._opened.clear()
        self.put(("call", lambda: self._open(opening)))

    def _open(self, opening) -> None:
        self._may_open.wait(OPEN_DELAY_SECONDS)
        try:
            opening()
        except Exception as err:
            self.error = err  # before `_opened` is set: `wait_opened` callers read it next
            raise
        finally:
            self._opened.set()

    def allow_open(self) -> None:
        """The first trial is under way (or the search waits for the store): open now."""
        self._may_open.set()

    def wait_opened(self) -> None:
        """Wait until an opening queued by `open`, if any, has run (see `error`)."""
        self.allow_open()
        self._opened.wait()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until everything queued so far is written. False (and a warning) on timeout."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("sync", done))
        if not done.wait(timeout):
            self.warn(f"pending writes not sent after {timeout:.0f} s")
            return False
        return True

    def close(self, status: str, reason: str) -> None:
        """Flush, abandon runs still open (with `status` and `reason`), stop the thread."""
        self.allow_open()
        done = threading.Event()
        self._queue.put(("close", status, reason, done))
        if self._thread.is_alive() and not done.wait(FLUSH_SECONDS):
            self.warn(f"pending writes not sent after {FLUSH_SECONDS:.0f} s")

    def _loop(self) -> None:
        while True:
            ops = self._gather()
            started, cpu = time.perf_counter(), time.thread_time()
            stop = False
            for op in coalesce(ops):
                try:
                    stop = self._apply(op) or stop
                except Exception as err:  # a bug here must not end all later writes
                    self.warn(f"a write failed: {type(err).__name__}: {err}")
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.thread_time() - cpu
            if stop:
                return

    def _gather(self) -> list[tuple]:
        """Block for one op, then collect more for up to GATHER_SECONDS (not past a flush)."""
        ops = [self._queue.get()]
        deadline = time.monotonic() + GATHER_SECONDS
        while ops[-1][0] not in ("sync", "close", "call"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                ops.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return ops

    def _apply(self, op: tuple) -> bool:
        """Carry out one op; True when the thread should stop."""
        kind = op[0]
        if kind == "sync":
            op[1].set()
        elif kind == "call":
            try:
                op[1]()
            except Exception as err:
                self.error = err
        elif self.failed and kind != "close":
            pass  # no store to write to
        elif kind == "close":
            _, status, reason, done = op
            for number in sorted(self.unended):
                self._retry(self.sink.abandon, self.runs[number], status, reason)
            self.unended.clear()
            done.set()
            return True
        elif kind == "start":
            _, number, spec, metrics = op
            self._start(number, spec, metrics)
        elif kind == "metrics":
            _, number, metrics = op
            if number in self.runs and metrics:
                self._retry(self.sink.log, self.runs[number], metrics, {})
        elif kind == "end":
            _, number, spec, ending = op
            if number not in self.runs:
                self._start(number, spec, [])
            if number in self.runs:
                self._retry(self.sink.end, self.runs[number], *ending)
            self.unended.discard(number)
        return False

    def _start(self, number: int, spec: dict, metrics: list) -> None:
        run_id = self._retry(self.sink.create, spec)
        if run_id is None:
            return
        self.runs[number] = run_id
        self.unended.add(number)
        self._retry(self.sink.log, run_id, metrics, spec.get("params", {}))

    def _retry(self, fn, *args):
        for attempt in range(2):
            try:
                return fn(*args)
            except Exception as err:  # a locked sqlite file, a server hiccup
                if attempt:
                    self.warn(f"a write was dropped: {type(err).__name__}: {err}")
                    return None
                time.sleep(RETRY_SECONDS)
        return None


def coalesce(ops: list[tuple]) -> list[tuple]:
    """Merge each trial's queued metrics into one op, keeping order around its start and end.

    Metrics queued just before a trial's end travel with the end's own batch: one write less.
    """
    out: list[tuple] = []
    pending: dict[int, list] = {}

    def release(number: int) -> None:
        if number in pending:
            out.append(("metrics", number, pending.pop(number)))

    for op in ops:
        if op[0] == "metrics":
            pending.setdefault(op[1], []).extend(op[2])
        elif op[0] == "end" and op[1] in pending:
            status, end_ms, tags, metrics = op[3]
            out.append(("end", op[1], op[2], (status, end_ms, tags, pending.pop(op[1]) + metrics)))
        elif op[0] in ("start", "end"):
            release(op[1])
            out.append(op)
        else:
            for number in list(pending):
                release(number)
            out.append(op)
    for number in list(pending):
        release(number)
    return out
