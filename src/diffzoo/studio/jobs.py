"""Background runs of the studio: one at a time, with progress and cancellation.

A run is a function ``fn(progress) -> Outcome`` executed on a worker thread. While it runs, global
PyTorch module hooks (``torch.nn.modules.module.register_module_forward_pre_hook``) watch every
``nn.Module`` call *on that thread*: a top-level call (one that is not nested in another module's
forward) counts as one network call, which drives the progress bar, and every module call first checks
the cancel flag and raises :class:`Cancelled` when it is set. This works for every library function
without changing it (``edit_image``, ``posterior_sample``, ``sample_zoo`` and the masked samplers
load or wrap their networks themselves), and cancellation takes effect within one layer of a network.
Only one run is held at a time (a 2-core CPU machine gains nothing from running two), so a second
submission is refused with :class:`Busy` until the first finishes or is cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

#: How many finished runs (with their images) are kept for download.
KEEP_JOBS = 16
STATES = ("running", "done", "error", "cancelled")


class Cancelled(Exception):
    """Raised inside a run (from a module hook or between units) once its cancel flag is set."""


class Busy(RuntimeError):
    """A run is already in progress."""


@dataclass
class Outcome:
    """What a run returns: result cards (JSON-able dicts), files (name -> bytes) and the settings JSON."""

    results: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    panel: str
    state: str = "running"
    progress: float = 0.0
    message: str = "starting"
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.time()
        return {
            "id": self.id,
            "panel": self.panel,
            "state": self.state,
            "progress": round(float(self.progress), 4),
            "message": self.message,
            "error": self.error,
            "results": self.results,
            "files": sorted(self.files),
            "elapsed": round(end - self.started, 2),
        }


class Progress:
    """Handed to a run: ``unit(i, n, label, expected_calls)`` starts unit ``i`` of ``n`` whose network
    is expected to be called ``expected_calls`` times; the module hooks fill the bar in between."""

    def __init__(self, job: Job):
        self.job = job
        self.thread = threading.get_ident()
        self.calls = 0
        self._depth = 0
        self._unit = (0, 1, "", 1)

    def check(self) -> None:
        if self.job.cancel_event.is_set():
            raise Cancelled("cancelled")

    def unit(self, i: int, n: int, label: str, expected_calls: int = 1) -> None:
        self.check()
        self.calls = 0
        self._unit = (int(i), max(1, int(n)), str(label), max(1, int(expected_calls)))
        self._update()

    def _update(self) -> None:
        i, n, label, expected = self._unit
        frac = min(self.calls / expected, 0.99)
        self.job.progress = min((i + frac) / n, 0.999)
        self.job.message = f"{label} ({i + 1}/{n}): {self.calls} network calls"

    # module hooks -----------------------------------------------------------------------------------
    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        if self.job.cancel_event.is_set():
            self._depth = 0
            raise Cancelled("cancelled")
        if self._depth == 0:
            self.calls += 1
            self._update()
        self._depth += 1

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == self.thread and self._depth > 0:
            self._depth -= 1

    @contextmanager
    def watching(self) -> Iterator[None]:
        pre = torch.nn.modules.module.register_module_forward_pre_hook(self._pre)
        post = torch.nn.modules.module.register_module_forward_hook(self._post)
        try:
            yield
        finally:
            pre.remove()
            post.remove()


class JobManager:
    """Runs one job at a time on a daemon thread; keeps the last :data:`KEEP_JOBS` for download."""

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._running: Job | None = None

    def submit(self, panel: str, fn: Callable[[Progress], Outcome]) -> Job:
        with self._lock:
            if self._running is not None and self._running.state == "running":
                raise Busy(f"a {self._running.panel} run is in progress; wait for it or cancel it")
            job = Job(uuid.uuid4().hex[:12], panel)
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP_JOBS:
                self.jobs.popitem(last=False)
            self._running = job
        threading.Thread(target=self._run, args=(job, fn), daemon=True, name=f"studio-{job.id}").start()
        return job

    def _run(self, job: Job, fn: Callable[[Progress], Outcome]) -> None:
        progress = Progress(job)
        try:
            with progress.watching():
                out = fn(progress)
            job.results, job.files, job.settings = out.results, out.files, out.settings
            job.state, job.progress, job.message = "done", 1.0, "done"
        except Cancelled:
            job.state, job.message = "cancelled", "cancelled"
        except (ValueError, TypeError, OSError, FloatingPointError) as e:  # the CLI's user errors
            job.state, job.error, job.message = "error", one_line(e), "failed"
        except Exception as e:  # noqa: BLE001 -- never a traceback in the page; the log has it
            log.exception("studio run %s failed", job.id)
            job.state, job.error, job.message = (
                "error",
                f"internal error ({type(e).__name__}); see the server log",
                "failed",
            )
        finally:
            job.finished = time.time()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel_event.set()
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job leaves ``running`` (tests, scripts)."""
        job = self.get(job_id)
        t0 = time.time()
        while job.state == "running" and time.time() - t0 < timeout:
            time.sleep(0.02)
        return job


def one_line(e: BaseException) -> str:
    """An exception as the one line the page shows (whitespace collapsed, at most ~300 characters)."""
    text = " ".join(str(e).split())
    return (text[:300] + " ...") if len(text) > 300 else (text or type(e).__name__)
