"""The MLflow UI on loopback over a store, seen through headless Chromium; also makes the docs screenshot:

PYTHONPATH=tests python -m helpers.mlflow_ui --tracking-uri sqlite:///mlflow.db --out docs/images/mlflow_ui.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.services_http import http_server
from polydefect.serve.threaded import free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def mlflow_ui(tracking_uri: str, log: Path, timeout: float = 180) -> Iterator[str]:
    """`mlflow server` (UI + REST API) on 127.0.0.1 over the store; yields its URL, stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with http_server(command, port, log, "mlflow server", timeout) as url:
        yield url


def require_chromium() -> None:
    """Skip where the browser is missing (a laptop without it), but never in CI, which installs it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} missing: CI must install the Debian packages chromium and chromium-driver")
        pytest.skip(f"{missing} not installed (Debian packages chromium, chromium-driver)")


@contextmanager
def headless_chromium(width: int = 1400, height: int = 800) -> Iterator[object]:
    """A selenium WebDriver for headless Chromium (Debian packages chromium, chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def show_runs(driver: object, url: str, experiment_id: str, names: Sequence[str], timeout: float = 120) -> str:
    """Open the experiment's run list and wait until every run name is rendered; returns the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/#/experiments/{experiment_id}/runs")
    text = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
    WebDriverWait(driver, timeout, poll_frequency=1).until(lambda d: all(n in text(d) for n in names))
    return text(driver)


def main() -> None:
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="polydefect")
    parser.add_argument("--out", type=Path, default=Path("docs/images/mlflow_ui.png"))
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = sorted({r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags})
    log = Path(tempfile.gettempdir()) / "polydefect_mlflow_ui.log"
    with mlflow_ui(args.tracking_uri, log) as url, headless_chromium() as driver:
        show_runs(driver, url, experiment.experiment_id, parents)
        for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            button.click()  # hide the assistant side panel: more room for the runs
        time.sleep(2)  # let the icons finish drawing
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
