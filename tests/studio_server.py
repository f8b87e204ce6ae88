"""A diffzoo studio server for the studio tests: started once per test session on a free local port (uvicorn
in a daemon thread, one torch thread), shared by the API and the browser tests so the models load once."""

from __future__ import annotations

import atexit
import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from diffzoo.studio import Studio, create_app

_SERVER: dict[str, Any] = {}


def start() -> tuple[str, Studio, Any]:
    """``(base_url, studio, jobs)`` of the session's server."""
    if not _SERVER:
        import uvicorn

        studio = Studio(threads=1)
        app = create_app(studio)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        t0 = time.time()
        while not server.started and time.time() - t0 < 30:
            time.sleep(0.02)
        assert server.started, "the studio server did not start"
        _SERVER.update(url=f"http://127.0.0.1:{port}", studio=studio, jobs=app.state.jobs)
        atexit.register(_stop, server, app.state.jobs)
    return _SERVER["url"], _SERVER["studio"], _SERVER["jobs"]


def _stop(server: Any, jobs: Any) -> None:
    """Cancel a run still going (a failed test) and stop the server before the interpreter exits."""
    for job in list(jobs.jobs.values()):
        job.cancel_event.set()
        jobs.wait(job.id, 30)
    server.should_exit = True


def call(path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """``(status, parsed JSON or bytes)`` of a GET (no body) or a POST (``body`` as JSON, or ``raw`` bytes)."""
    url = _SERVER["url"] + path
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, payload, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, payload, ctype = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(payload) if "json" in ctype and not path.endswith("settings.json") else payload


def upload(data: bytes, name: str = "x.png") -> tuple[int, Any]:
    return call("/api/upload", {"name": name, "data": base64.b64encode(data).decode()})


def wait(job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    t0 = time.time()
    while True:
        status, job = call(f"/api/jobs/{job_id}")
        assert status == 200, job
        if job["state"] != "running" or time.time() - t0 > timeout:
            return job
        time.sleep(0.05)
