"""`python -m polydefect.serve bundle=<folder> [db=<SQLAlchemy URL>] [serve.port=8000]`: serve a bundle with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import uvicorn
from fastapi import FastAPI
from omegaconf import DictConfig

from polydefect.export.runtime import InspectionBundle
from polydefect.serve.app import create_app
from polydefect.serve.store import Store

log = logging.getLogger(__name__)


def build_app(cfg: DictConfig) -> FastAPI:
    """The app for a composed `conf/serve.yaml`: the bundle loaded, the database opened (tables made if new)."""
    folder = Path(str(cfg.bundle)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"bundle={cfg.bundle}: no such folder (write one with python -m polydefect.export)")
    bundle = InspectionBundle.load(folder)
    store = Store(str(cfg.db))
    log.info("Bundle of run %s from %s; batches stored in %s", bundle.run_id, folder, store.describe())
    serve = cfg.serve
    return create_app(
        bundle,
        store,
        max_request_mb=float(serve.max_request_mb),
        page_batches=int(serve.page_batches),
        chart_batches=int(serve.chart_batches),
        refresh_s=int(serve.refresh_s),
    )


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    app = build_app(cfg)
    log.info("Operator page on http://%s:%d/", cfg.serve.host, cfg.serve.port)
    uvicorn.run(app, host=str(cfg.serve.host), port=int(cfg.serve.port), log_config=None)  # Hydra's logging


if __name__ == "__main__":
    main()
