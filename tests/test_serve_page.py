"""The operator page of `python -m polydefect.serve`, seen through headless Chromium: the scratched batch is flagged
in the list and on the control charts, and its page shows its images' overlays, highest score first.

POLYDEFECT_SCREENSHOT=1 also saves the two pages as docs/images/operator_page.png and operator_batch.png."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from helpers.mlflow_ui import headless_chromium, require_chromium
from helpers.paths import REPO
from helpers.serve import DEFECTIVE, exported_bundle, new_batches, served, upload


def test_the_operator_page_flags_the_scratched_batch_and_shows_its_images(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    require_chromium()
    bundle = exported_bundle(tmp_path_factory.getbasetemp() / "trained_tiny")
    batches = new_batches(tmp_path / "batches")
    screenshots = REPO / "docs" / "images" if os.environ.get("POLYDEFECT_SCREENSHOT") == "1" else tmp_path
    with served(bundle, f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "logs") as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            answers = {b: upload(http, batches / f"batch_{b:02d}" / "images", f"lot {b}").json() for b in (1, 2, 3)}
        with headless_chromium(1400, 1000) as driver:
            driver.get(f"{url}/")
            rows = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#batches tr")[1:])
            verdicts = {row.find_element(By.CSS_SELECTOR, "td").text: row.text for row in rows}
            assert list(verdicts) == [str(answers[b]["id"]) for b in (3, 2, 1)]  # newest first
            assert "OUT OF CONTROL" in verdicts[str(answers[DEFECTIVE]["id"])]
            assert all("in control" in verdicts[str(answers[b]["id"])] for b in (1, 3))
            charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
            assert len(charts) == 4 and all(chart.size["width"] > 300 for chart in charts)
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart circle.out")) >= 4  # batch 2 in each view
            driver.save_screenshot(str(screenshots / "operator_page.png"))

            driver.find_element(By.LINK_TEXT, str(answers[DEFECTIVE]["id"])).click()
            images = WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "img.overlay"))
            loaded = "return arguments[0].complete && arguments[0].naturalWidth"
            WebDriverWait(driver, 30).until(lambda d: all(d.execute_script(loaded, image) for image in images))
            assert [driver.execute_script(loaded, image) for image in images] == [2 * 96] * 4
            names = [
                row.find_elements(By.TAG_NAME, "td")[1].text
                for row in driver.find_elements(By.CSS_SELECTOR, "#images tr")[1:]
            ]
            by_score = sorted(answers[DEFECTIVE]["images"], key=lambda image: image["score"], reverse=True)
            assert names == [image["name"] for image in by_score]
            assert "OUT OF CONTROL" in driver.find_element(By.TAG_NAME, "h1").text
            driver.save_screenshot(str(screenshots / "operator_batch.png"))
    for name in ("operator_page.png", "operator_batch.png"):
        assert (screenshots / name).read_bytes().startswith(b"\x89PNG") and (screenshots / name).stat().st_size > 10_000
