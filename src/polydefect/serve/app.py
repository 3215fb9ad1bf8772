"""The FastAPI app: upload a batch and get its verdicts and overlays; every batch stored; the operator page;
health and metrics.

Routes:
    POST /api/batches        multipart: `files` (the images), optional `views` (one per file, in order; default:
                             the bundle's only view, or each file's stem) and `label`; 201 with the stored
                             batch, 422 naming a bad file,
                             413 over `serve.max_request_mb`
    GET  /api/batches        the newest batches (`?limit=`), newest first
    GET  /api/batches/{id}   one batch with its images
    GET  /overlays/{id}.png  an image's overlay
    GET  /  and  /batches/{id}   the operator page
    GET  /health, /metrics
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from polydefect.export.runtime import BadInput, BatchResult, InspectionBundle, UploadedImage
from polydefect.serve.limits import RequestSizeLimit
from polydefect.serve.metrics import PROMETHEUS_TEXT, prometheus_text
from polydefect.serve.page import batch_list_page, batch_page, document
from polydefect.serve.store import BatchRow, BatchSummary, ImageRow, Store

FORM_FIELDS = ("files", "views", "label")


class FormError(ValueError):
    """The upload's form is malformed (not one of its files): answered like a bad file, with `file` None."""

    file = None


def image_json(image: ImageRow) -> dict[str, Any]:
    return {
        "id": image.id,
        "name": image.name,
        "view": image.view,
        "score": image.score,
        "threshold": image.threshold,
        "anomalous": image.anomalous,
        "map_sum": image.map_sum,
        "nqi": image.nqi,
        "ucl": image.ucl,
        "out_of_control": image.out_of_control,
        "overlay_url": f"/overlays/{image.id}.png",
    }


def verdict_json(batch: BatchRow | BatchSummary) -> dict[str, Any]:
    """What the batch list and a batch's own answer share: its id, page, time, label and SPC verdict."""
    return {
        "id": batch.id,
        "url": f"/batches/{batch.id}",
        "received": batch.received.isoformat() + "Z",
        "label": batch.label,
        "out_of_control": batch.out_of_control,
        "views_out": batch.views_out,
    }


def summary_json(summary: BatchSummary) -> dict[str, Any]:
    return {**verdict_json(summary), "images": summary.images, "flagged": summary.flagged}


def batch_json(batch: BatchRow) -> dict[str, Any]:
    """A stored batch as the API answers it: images in upload order, overlays as URLs."""
    return {
        **verdict_json(batch),
        "run_id": batch.run_id,
        "note": batch.note,
        "scoring_seconds": batch.scoring_seconds,
        "images": [image_json(image) for image in batch.images],
    }


async def parse_upload(form: FormData, only_view: str | None = None) -> tuple[list[UploadedImage], str]:
    """The form's files with their views and label. Without a `views` list, every file's view is `only_view`
    where the bundle knows one view (MVTec layout: "all"), else each file's stem (thesis layout: p01_c0)."""
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise FormError(f"unknown form field(s) {unknown}: an upload has {', '.join(FORM_FIELDS)}")
    files, views, label = form.getlist("files"), form.getlist("views"), form.get("label", "")
    if any(not isinstance(file, UploadFile) for file in files):
        raise FormError("form field 'files' holds text: send each image as a file part")
    if not isinstance(label, str) or any(not isinstance(view, str) for view in views):
        raise FormError("form fields 'views' and 'label' are text, not files")
    if views and len(views) != len(files):
        raise FormError(
            f"{len(views)} views for {len(files)} files: send one view per file, in the files' order, "
            "or none (each file's view is then its stem, e.g. p01_c0.png -> p01_c0)"
        )
    names = [file.filename or f"file {index + 1}" for index, file in enumerate(files)]
    views = views or [only_view or Path(name).stem for name in names]
    images = [UploadedImage(name=n, view=v, data=await f.read()) for n, v, f in zip(names, views, files, strict=True)]
    return images, label


def create_app(
    bundle: InspectionBundle,
    store: Store,
    max_request_mb: float,
    page_batches: int = 50,
    chart_batches: int = 50,
    refresh_s: int = 0,
) -> FastAPI:
    """The service over one bundle and one store.

    Args:
        bundle: the loaded inspection bundle; one batch is scored at a time (the scoring is CPU-bound and
            already uses the cores), while the database takes concurrent writes.
        store: where every inspected batch goes.
        max_request_mb: `serve.max_request_mb`, the largest upload body.
        page_batches: batches listed on the operator page (the newest).
        chart_batches: batches on the control charts (the newest with nQI).
        refresh_s: the operator page reloads itself this often (0: never).
    """
    app = FastAPI(title="polydefect line inspection", summary=f"inspection bundle of run {bundle.run_id}")
    app.add_middleware(RequestSizeLimit, max_mb=max_request_mb)
    scoring = threading.Lock()
    only_view = bundle.views[0] if bundle.views is not None and len(bundle.views) == 1 else None

    def score(images: list[UploadedImage]) -> tuple[BatchResult, float]:
        with scoring:
            start = time.perf_counter()
            result = bundle.inspect(images)
            return result, time.perf_counter() - start

    @app.post("/api/batches", status_code=201)
    async def upload(request: Request) -> JSONResponse:
        async with request.form() as form:
            try:
                images, label = await parse_upload(form, only_view)
                result, seconds = await run_in_threadpool(score, images)
            except (BadInput, FormError) as error:
                return JSONResponse({"detail": str(error), "file": error.file}, status_code=422)
        batch = await run_in_threadpool(store.add_batch, result, label, bundle.run_id, seconds)
        return JSONResponse(batch_json(batch), status_code=201)

    @app.get("/api/batches")
    def list_batches(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return [summary_json(summary) for summary in store.summaries(limit)]

    @app.get("/api/batches/{batch_id}")
    def get_batch(batch_id: int) -> JSONResponse:
        batch = store.batch(batch_id)
        if batch is None:
            return JSONResponse({"detail": f"no batch {batch_id}"}, status_code=404)
        return JSONResponse(batch_json(batch))

    @app.get("/overlays/{image_id}.png")
    def overlay(image_id: int) -> Response:
        png = store.overlay(image_id)
        if png is None:
            return JSONResponse({"detail": f"no image {image_id}"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=86400, immutable"})

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        summaries, points = store.summaries(page_batches), store.control_points(chart_batches)
        return batch_list_page(bundle.run_id, summaries, store.count(), points, refresh_s)

    @app.get("/batches/{batch_id}", response_class=HTMLResponse)
    def show_batch(batch_id: int) -> HTMLResponse:
        batch = store.batch(batch_id)
        if batch is None:
            page = document("No such batch", [f"<p><a href='/'>&larr; all batches</a></p><h1>No batch {batch_id}</h1>"])
            return HTMLResponse(page, status_code=404)
        return HTMLResponse(batch_page(batch))

    @app.get("/health")
    def health() -> JSONResponse:
        try:
            batches = store.count()
        except SQLAlchemyError as error:
            detail = f"database {store.describe()} does not answer: {error}"
            return JSONResponse({"status": "error", "detail": detail}, status_code=503)
        return JSONResponse({"status": "ok", "run_id": bundle.run_id, "views": bundle.views, "batches": batches})

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(prometheus_text(store.totals()), media_type=PROMETHEUS_TEXT)

    return app
