"""`python -m polydefect.serve`: a tiny CAE run's inspection bundle behind HTTP. Batches uploaded get the verdicts
`polydefect.inspect` gives; every batch is stored whole in a real SQLite file (or not at all); bad input is
refused naming the file; concurrent clients lose nothing; the history survives a restart."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from helpers.planted import planted_run_config, write_planted_mvtec
from helpers.serve import DEFECTIVE, batch_files, exported_bundle, new_batches, served, upload
from helpers.tiny import store_uri, trained_tiny_runs
from omegaconf import OmegaConf
from sqlalchemy.exc import IntegrityError

from polydefect.export.bundle import export_bundle
from polydefect.export.runtime import InspectionBundle, UploadedImage
from polydefect.inspect import inspect_folder
from polydefect.pipeline.run import run
from polydefect.serve.app import create_app
from polydefect.serve.store import Store
from polydefect.serve.threaded import served_in_thread

BATCHES = (1, 2, 3)
PNG = b"\x89PNG\r\n\x1a\n"
# ONNX Runtime against PyTorch, float32: scores differ by up to ~3e-7 here. Batch 3 repeats a training batch
# (the fixture's seed), so some of its scores equal their threshold, the largest training score: within this
# distance of its threshold a verdict may go either way and is not compared.
SCORE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_bundle(tmp_path_factory.getbasetemp() / "trained_tiny")


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> InspectionBundle:
    return InspectionBundle.load(bundle_dir)


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_batches(tmp_path_factory.mktemp("serve_batches"))


def images_of(batches: Path, batch: int) -> Path:
    return batches / f"batch_{batch:02d}" / "images"


@pytest.fixture(scope="module")
def inspected(batches: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`polydefect.inspect` of the same run on the same batches: (per-image report, per-batch verdicts)."""
    root = tmp_path_factory.getbasetemp() / "trained_tiny"
    cfg = OmegaConf.create(
        {
            "run": trained_tiny_runs(root)["tiny_cae"],
            "data": {"root": str(batches), "layout": "auto"},
            "mlflow": {"tracking_uri": store_uri(root)},
            "threshold": "per_view",
            "overlays": 0,
        }
    )
    out = inspect_folder(cfg, tmp_path_factory.mktemp("serve_inspect"))
    return pd.read_csv(out / "report.csv"), pd.read_csv(out / "batches.csv").set_index("batch")


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "serve.db"


@pytest.fixture
def client(bundle: InspectionBundle, db_file: Path) -> Iterator[TestClient]:
    """The app in-process over a fresh SQLite file."""
    with TestClient(create_app(bundle, Store(f"sqlite:///{db_file}"), max_request_mb=8)) as test_client:
        yield test_client


def rows(db_file: Path, query: str) -> list[tuple]:
    """Read the database with sqlite3 itself, not through the service's own queries."""
    with sqlite3.connect(db_file) as connection:
        return connection.execute(query).fetchall()


def test_the_service_gives_the_verdicts_of_inspect_and_flags_the_scratched_batch(
    client: TestClient, batches: Path, inspected: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    report, verdicts = inspected
    answers, compared = {}, 0
    for batch in BATCHES:
        response = upload(client, images_of(batches, batch), label=f"batch_{batch:02d}")
        assert response.status_code == 201, response.text
        answers[batch] = response.json()
        expected = report[report["batch"] == batch].set_index("view")
        assert [image["view"] for image in answers[batch]["images"]] == sorted(expected.index)  # upload order
        for image in answers[batch]["images"]:
            row = expected.loc[image["view"]]
            assert image["score"] == pytest.approx(row["score"], abs=SCORE_TOLERANCE)
            assert image["threshold"] == pytest.approx(row["threshold"], abs=1e-6)
            if abs(row["score"] - row["threshold"]) > SCORE_TOLERANCE:
                assert image["anomalous"] == row["anomalous"], image["name"]
                compared += 1
            assert image["ucl"] == pytest.approx(row["ucl"])
            assert image["nqi"] == pytest.approx(row["nqi"], abs=1e-3)
            assert image["out_of_control"] == row["out_of_control"]
        assert answers[batch]["out_of_control"] == verdicts.loc[batch, "out_of_control"]
        assert answers[batch]["views_out"] == verdicts.loc[batch, "views_out"]
    assert compared >= 10  # of 12
    scratched = answers[DEFECTIVE]
    assert scratched["out_of_control"] and scratched["views_out"] == 4
    assert all(image["anomalous"] for image in scratched["images"])
    assert not answers[1]["out_of_control"] and not answers[3]["out_of_control"]


def test_views_sent_with_the_files_replace_their_stems(client: TestClient, batches: Path) -> None:
    files = batch_files(images_of(batches, 1))
    by_stem = upload(client, images_of(batches, 1)).json()
    renamed = [("files", (f"camera_{index}.png", data, kind)) for index, (_, (_, data, kind)) in enumerate(files)]
    views = [Path(name).stem for _, (name, _, _) in files]
    response = client.post("/api/batches", files=renamed, data={"views": views})
    assert response.status_code == 201, response.text
    answer = response.json()
    assert [i["name"] for i in answer["images"]] == [f"camera_{index}.png" for index in range(len(files))]
    assert [i["view"] for i in answer["images"]] == views
    assert [i["score"] for i in answer["images"]] == [i["score"] for i in by_stem["images"]]


def test_each_batch_is_stored_with_its_images_scores_verdicts_nqi_and_overlays(
    client: TestClient, batches: Path, db_file: Path
) -> None:
    answer = upload(client, images_of(batches, DEFECTIVE), label="lot 7").json()
    assert rows(db_file, "SELECT id, label, out_of_control, views_out FROM batches") == [(answer["id"], "lot 7", 1, 4)]
    stored = rows(db_file, "SELECT name, view, score, anomalous, nqi, ucl, overlay_png FROM images ORDER BY position")
    assert [(n, v, s, bool(a), q, u) for n, v, s, a, q, u, _ in stored] == [
        (i["name"], i["view"], i["score"], i["anomalous"], i["nqi"], i["ucl"]) for i in answer["images"]
    ]
    for (*_, png), image in zip(stored, answer["images"], strict=True):
        assert png.startswith(PNG)
        fetched = client.get(image["overlay_url"])
        assert fetched.headers["content-type"] == "image/png" and fetched.content == png
        overlay = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert overlay.shape == (64, 2 * 96, 3)  # the image beside its map
    assert client.get(f"/api/batches/{answer['id']}").json() == answer


@pytest.mark.parametrize(
    ("case", "bad_file"),
    [
        ("not an image", "notes.png"),
        ("wrong size", "p01_c1.png"),
        ("unknown view", "p09_c9.png"),
        ("empty batch", None),
        ("fewer views than files", None),
    ],
)
def test_bad_input_is_refused_naming_the_file_and_nothing_is_stored(
    client: TestClient, batches: Path, db_file: Path, case: str, bad_file: str | None
) -> None:
    files = batch_files(images_of(batches, 1))
    good = files[0][1][1]
    small = cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1].tobytes()
    form = {
        "not an image": {"files": [*files[:2], ("files", ("notes.png", b"shift notes, no pixels", "image/png"))]},
        "wrong size": {"files": [files[0], ("files", ("p01_c1.png", small, "image/png"))]},
        "unknown view": {"files": [files[0], ("files", ("p09_c9.png", good, "image/png"))]},
        "empty batch": {"data": {"label": "nothing in it"}},
        "fewer views than files": {"files": files, "data": {"views": ["p01_c0"]}},
    }[case]
    response = client.post("/api/batches", **form)
    assert response.status_code == 422, response.text
    assert response.json()["file"] == bad_file
    assert response.json()["detail"]
    assert rows(db_file, "SELECT count(*) FROM batches") == [(0,)]
    assert rows(db_file, "SELECT count(*) FROM images") == [(0,)]


def test_an_upload_over_the_size_limit_is_refused_with_413_naming_the_limit(
    bundle: InspectionBundle, batches: Path, db_file: Path
) -> None:
    files = batch_files(images_of(batches, 1))
    assert sum(len(data) for _, (_, data, _) in files) > 0.01 * 1024 * 1024
    with TestClient(create_app(bundle, Store(f"sqlite:///{db_file}"), max_request_mb=0.01)) as client:
        declared = client.post("/api/batches", files=files)
        body = b"".join(data for _, (_, data, _) in files)
        chunked = client.post(  # no Content-Length: counted as it arrives
            "/api/batches",
            content=(body[i : i + 4096] for i in range(0, len(body), 4096)),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        for response in (declared, chunked):
            assert response.status_code == 413
            assert "serve.max_request_mb=0.01" in response.json()["detail"]
        assert client.get("/health").json()["batches"] == 0


def test_a_batch_whose_write_fails_leaves_nothing_of_it(bundle: InspectionBundle, batches: Path, tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}")
    images = [UploadedImage(p.name, p.stem, p.read_bytes()) for p in sorted(images_of(batches, 1).glob("*.png"))]
    result = bundle.inspect(images)
    broken = replace(result, images=[*result.images[:-1], replace(result.images[-1], overlay_png=None)])
    with pytest.raises(IntegrityError):  # the last image cannot be written: the batch goes with it
        store.add_batch(broken, "broken", bundle.run_id, 0.1)
    assert store.count() == 0
    assert rows(tmp_path / "serve.db", "SELECT count(*) FROM images") == [(0,)]
    stored = store.add_batch(result, "whole", bundle.run_id, 0.1)
    assert len(store.batch(stored.id).images) == len(images)


def test_health_and_metrics_count_the_stored_batches(client: TestClient, bundle: InspectionBundle, batches) -> None:
    health = client.get("/health").json()
    assert health == {"status": "ok", "run_id": bundle.run_id, "views": bundle.views, "batches": 0}
    answers = [upload(client, images_of(batches, batch)).json() for batch in (1, DEFECTIVE)]
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = dict(re.findall(r"^(polydefect_\w+) (\S+)$", response.text, re.MULTILINE))
    flagged = sum(image["anomalous"] for answer in answers for image in answer["images"])
    assert metrics["polydefect_batches"] == "2" and metrics["polydefect_images"] == "8"
    assert metrics["polydefect_images_flagged"] == str(flagged)
    assert metrics["polydefect_batches_out_of_control"] == "1"
    mean_seconds = np.mean([answer["scoring_seconds"] for answer in answers])
    assert float(metrics["polydefect_scoring_seconds_mean"]) == pytest.approx(mean_seconds)
    assert client.get("/health").json()["batches"] == 2


def test_the_operator_page_lists_batches_newest_first_with_control_charts(client: TestClient, batches) -> None:
    first = upload(client, images_of(batches, 1), label="<b>lot 1</b>").json()
    second = upload(client, images_of(batches, DEFECTIVE), label="lot 2").json()
    page = client.get("/").text
    assert page.index(f"href='/batches/{second['id']}'") < page.index(f"href='/batches/{first['id']}'")
    assert "&lt;b&gt;lot 1&lt;/b&gt;" in page and "<b>lot 1</b>" not in page
    assert page.count("OUT OF CONTROL") == 1 and page.count("in control") == 1
    views = re.findall(r'<svg class="chart"[^>]*data-view="([^"]+)"', page)
    assert sorted(views) == sorted(image["view"] for image in first["images"])
    assert page.count('class="ucl"') == len(views) and page.count("<circle cx=") == 2 * len(views)
    batch_page = client.get(second["url"]).text
    shown = [int(i) for i in re.findall(r"<img class='overlay' src='/overlays/(\d+)\.png'", batch_page)]
    by_score = sorted(second["images"], key=lambda image: image["score"], reverse=True)
    assert shown == [image["id"] for image in by_score]
    assert batch_page.count("ANOMALOUS") == sum(image["anomalous"] for image in second["images"])
    for missing in ("/batches/99", "/api/batches/99", "/overlays/9999.png"):
        assert client.get(missing).status_code == 404


def upload_concurrently(url: str, batches: Path, clients: int, per_client: int) -> list[dict]:
    """`clients` threads, each uploading `per_client` batches (cycling over the new batches) over HTTP."""
    answers: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one_client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in range(per_client):
                batch = BATCHES[(index + n) % len(BATCHES)]
                response = upload(http, images_of(batches, batch), label=f"client {index} #{n}: batch {batch}")
                with lock:
                    if response.status_code == 201:
                        answers.append(response.json())
                    else:
                        failures.append(f"{response.status_code} {response.text}")

    threads = [threading.Thread(target=one_client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    return answers


def test_four_concurrent_clients_lose_no_batch(bundle: InspectionBundle, batches: Path, db_file: Path) -> None:
    per_client = 25
    with served_in_thread(create_app(bundle, Store(f"sqlite:///{db_file}"), max_request_mb=8)) as url:
        answers = upload_concurrently(url, batches, clients=4, per_client=per_client)
        metrics = httpx.get(f"{url}/metrics").text
    total = 4 * per_client
    assert sorted(answer["id"] for answer in answers) == list(range(1, total + 1))
    assert f"polydefect_batches {total}\n" in metrics
    stored = rows(db_file, "SELECT label, out_of_control FROM batches")
    assert sorted(stored) == sorted((a["label"], int(a["out_of_control"])) for a in answers)
    assert all(bool(out) == label.endswith(f"batch {DEFECTIVE}") for label, out in stored)
    images = rows(db_file, "SELECT batch_id, count(*), count(score), count(nqi) FROM images GROUP BY batch_id")
    assert len(images) == total and all(counts[1:] == (4, 4, 4) for counts in images)


def test_the_history_survives_a_restart(bundle_dir: Path, batches: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    with served(bundle_dir, db, tmp_path / "first") as url, httpx.Client(base_url=url) as http:
        before = [upload(http, images_of(batches, batch), label=f"lot {batch}").json() for batch in (1, DEFECTIVE)]
    with served(bundle_dir, db, tmp_path / "second") as url, httpx.Client(base_url=url) as http:
        assert [http.get(f"/api/batches/{answer['id']}").json() for answer in before] == before
        assert [b["id"] for b in http.get("/api/batches").json()] == [before[1]["id"], before[0]["id"]]
        page = http.get("/").text
        assert "lot 1" in page and "lot 2" in page and "OUT OF CONTROL" in page
        overlay = http.get(before[1]["images"][0]["overlay_url"])
        assert overlay.status_code == 200 and overlay.content.startswith(PNG)
        after = upload(http, images_of(batches, 3), label="lot 3").json()
    assert after["id"] == before[1]["id"] + 1
    assert (tmp_path / "second" / "serve.log").is_file()


@pytest.mark.services
def test_postgresql_keeps_concurrent_batches_whole(bundle: InspectionBundle, batches: Path) -> None:
    from services.postgres import database

    store = Store(database("serve"))
    images = [UploadedImage(p.name, p.stem, p.read_bytes()) for p in sorted(images_of(batches, 2).glob("*.png"))]
    result = bundle.inspect(images)
    threads = [
        threading.Thread(target=lambda: [store.add_batch(result, "pg", bundle.run_id, 0.1) for _ in range(5)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    broken = replace(result, images=[*result.images[:-1], replace(result.images[-1], overlay_png=None)])
    with pytest.raises(IntegrityError):
        store.add_batch(broken, "broken", bundle.run_id, 0.1)
    summaries = store.summaries(100)
    assert len(summaries) == 20 and {(s.label, s.images, s.out_of_control) for s in summaries} == {("pg", 4, True)}
    assert store.overlay(store.batch(summaries[0].id).images[0].id) == result.images[0].overlay_png


def test_an_mvtec_layout_bundle_is_served_without_views_or_control_limits(tmp_path: Path) -> None:
    """A run on an MVTec-layout folder has one view ("all") and no batches of views: uploads need no views, the
    verdicts come from the threshold alone, and the page says why it draws no chart. The planted defects score
    above the good parts."""
    data = write_planted_mvtec(tmp_path / "parts")
    detector = ["model=patchcore", "model.input_size=128"]
    cfg = planted_run_config(tmp_path, data, tmp_path / "cache", tmp_path / "out", *detector)
    bundle = InspectionBundle.load(export_bundle(run(cfg)["run_id"], store_uri(tmp_path), tmp_path / "bundle"))
    assert bundle.views == ["all"]
    files = sorted((data / "test").glob("*/*.png"))
    with TestClient(create_app(bundle, Store(f"sqlite:///{tmp_path / 'serve.db'}"), max_request_mb=8)) as client:
        answer = client.post("/api/batches", files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files])
        assert answer.status_code == 201, answer.text
        batch = answer.json()
        assert batch["out_of_control"] is None and "no control limits" in batch["note"]
        assert {image["view"] for image in batch["images"]} == {"all"}
        assert all(image["nqi"] is None for image in batch["images"])
        scores = {True: [], False: []}
        for file, image in zip(files, batch["images"], strict=True):
            scores[file.parent.name != "good"].append(image["score"])
        pairs = [d > g for d in scores[True] for g in scores[False]]
        assert sum(pairs) / len(pairs) >= 0.8  # the image AUROC of the service's scores
        assert "No batch with nQI stored yet" in client.get("/").text
