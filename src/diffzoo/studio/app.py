"""The studio's HTTP server: FastAPI routes over :mod:`diffzoo.studio.runs`, and a hand-written page.

Why FastAPI + a static page rather than Gradio: the page is three small files (HTML, CSS, plain JS)
served from the package, so the studio works fully offline (no CDN fonts or scripts, no analytics: the
``Content-Security-Policy`` header forbids any other origin), installs in seconds (``fastapi`` +
``uvicorn``, no Node / frontend bundle), and its JSON API is the same one the tests and scripts call.

Routes (all JSON unless noted; errors are ``{"error": "<one line naming the field>"}`` with status
400, 404 or 409 -- never a traceback)::

    GET  /                           the page (static/index.html)
    GET  /static/{file}              studio.js, studio.css
    GET  /api/info                   registries: edit methods, priors, operators, samplers, audit families, examples
    POST /api/upload                 {"name", "data": base64 or data URL} -> upload info (validated by io.open_image)
    GET  /api/uploads/{id}.png       the upload as PNG
    POST /api/run/{panel}            panel in edit | restore | sample | audit; settings -> job
    GET  /api/jobs/{id}              state, progress, message, error, result cards
    POST /api/jobs/{id}/cancel       cancel a run
    GET  /api/jobs/{id}/files/{name} result PNGs, input.png, settings.json (?download=1: as attachment)
"""

import base64
import binascii
import logging
from pathlib import Path
from typing import Any

import torch

from diffzoo.io import image_to_tensor
from diffzoo.studio import audit, runs
from diffzoo.studio.jobs import Busy, JobManager, Progress, one_line

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"index.html": "text/html", "studio.js": "text/javascript", "studio.css": "text/css"}
PANELS = ("edit", "restore", "sample", "audit")
CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"


def create_app(studio: runs.Studio | None = None, jobs: JobManager | None = None) -> Any:
    """The FastAPI application (``fastapi`` is the ``studio`` extra: imported here, not at module import)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    studio = studio or runs.Studio()
    jobs = jobs or JobManager()
    app = FastAPI(title="diffzoo studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio, app.state.jobs = studio, jobs

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        try:
            response = await call_next(request)
        except (ValueError, TypeError, OSError) as e:
            response = error(400, one_line(e))
        except KeyError as e:
            response = error(404, f"not found: {e.args[0] if e.args else ''}")
        except Busy as e:
            response = error(409, str(e))
        except Exception as e:  # noqa: BLE001 -- the page gets one line; the log gets the traceback
            log.exception("studio request failed")
            response = error(500, f"internal error ({type(e).__name__}); see the server log")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def body(request: Request) -> dict[str, Any]:
        if int(request.headers.get("content-length") or 0) > 2 * runs.MAX_UPLOAD_BYTES:
            raise ValueError("request: too large")
        try:
            data = await request.json()
        except ValueError:
            raise ValueError("request: expected a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("request: expected a JSON object")
        return data

    @app.get("/")
    def index() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise KeyError(name)
        return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name])

    @app.get("/api/info")
    def get_info() -> dict[str, Any]:
        return runs.info(studio, audit.describe(studio))

    @app.post("/api/upload")
    async def upload(request: Request) -> dict[str, Any]:
        data = await body(request)
        raw = data.get("data")
        if not isinstance(raw, str):
            raise ValueError("image: no file data")
        if raw.startswith("data:"):
            raw = raw.partition(",")[2]
        try:
            blob = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image: the upload is not valid base64 data") from None
        return studio.add_upload(blob, str(data.get("name") or "upload")).info()

    @app.get("/api/uploads/{upload_id}.png")
    def upload_png(upload_id: str) -> Response:
        if upload_id not in studio.uploads:
            raise KeyError(upload_id)
        # what the runs see: io's conversions (alpha onto white, 16-bit to 8-bit, CMYK to RGB, ...)
        x = image_to_tensor(studio.uploads[upload_id].image, 3)
        return Response(runs.png_bytes(x), media_type="image/png")

    @app.post("/api/run/{panel}")
    async def run(panel: str, request: Request) -> dict[str, Any]:
        if panel not in PANELS:
            raise ValueError(f"panel: expected one of {list(PANELS)}, got {panel!r}")
        settings = await body(request)
        fn = _job_function(studio, panel, settings)
        return jobs.submit(panel, fn).to_json()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).to_json()

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        return jobs.cancel(job_id).to_json()

    @app.get("/api/jobs/{job_id}/files/{name}")
    def job_file(job_id: str, name: str, download: str = "") -> Response:
        files = jobs.get(job_id).files
        if name not in files:
            raise KeyError(name)
        media = "application/json" if name.endswith(".json") else "image/png"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'} if download not in ("", "0") else {}
        return Response(files[name], media_type=media, headers=headers)

    return app


def _job_function(studio: runs.Studio, panel: str, settings: dict[str, Any]) -> Any:
    """Validate ``settings`` now (a bad request is a 400 before anything runs); the run for the worker."""
    threads = studio.threads

    def with_threads(fn: Any) -> Any:
        def job(progress: Progress) -> Any:
            if threads:
                torch.set_num_threads(threads)
            return fn(progress)

        return job

    if panel == "edit":
        s = runs.check_edit(studio, settings)
        return with_threads(lambda p: runs.run_edit(studio, s, p))
    if panel == "restore":
        s = runs.check_restore(studio, settings)
        return with_threads(lambda p: runs.run_restore(studio, s, p))
    if panel == "sample":
        s = runs.check_sample(studio, settings)
        return with_threads(lambda p: runs.run_sample(studio, s, p))
    s = audit.check_audit(studio, settings)
    return with_threads(lambda p: audit.run_audit(studio, s, p))


def serve(studio: runs.Studio, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the studio with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(studio), host=host, port=port, log_level="info", access_log=False)
