"""`python -m polydefect.tables`: the thesis tables from the MLflow runs of a sweep, as Markdown and CSV.

Each table keeps the latest finished run per cell (e.g. per model and preprocessing) and puts the thesis'
published numbers beside ours where the thesis has them (Table 1.1, Table 4.1, section 4.3.2).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from polydefect.config import register_configs
from polydefect.tracking import CHOSEN_TAG

log = logging.getLogger(__name__)

THESIS_NUMBERS = Path("experiments/thesis_numbers.yaml")  # the default of --thesis-numbers
CONF = Path(__file__).resolve().parents[2] / "conf"  # the app's configs, as `python -m polydefect` reads them
DEV_SETS = ("magnetic_tile", "kolektorsdd", "posed_bricks")  # the development sets, by their folders' names
DEV_SETS_NAME = "dev_sets"  # the run name (`name=`) of +experiment=dev_sets; dev_sets_<option> for an option
DETECTOR_COLUMNS = (
    "image_auroc",
    "image_auprc",
    "f1",
    "pixel_auroc",
    "aupro",
    "val_synthetic_auroc",
    "train_s",
    "infer_img_per_s",
)
TRAIN_DATA = ("real", "synthetic", "mixed")
THRESHOLDS = ("global", "per_view", "val_f1")
SEGMENT_METRICS = ("precision", "recall", "f1", "auc", "iou")
IMAGE_METRICS = ("image_auroc", "image_auprc", "f1", "f2")


@dataclass
class Table:
    """One output table: its file stem, a title for the Markdown, and the rows."""

    name: str
    title: str
    frame: pd.DataFrame


# The sweep behind each table, printed under it (then `python -m polydefect.tables`).
MAGNETIC_TILE_COMMANDS = (
    "python -m polydefect -m +experiment=magnetic_tile data.root=<MVTec-layout folder> && "
    "python -m polydefect -m +experiment=magnetic_tile data.root=<MVTec-layout folder> model=cae,dae "
    "preprocess=mvtec_128"
)
DEV_SETS_COMMANDS = (
    "python -m polydefect -m +experiment=dev_sets && "
    "python -m polydefect -m +experiment=dev_sets model=cae,dae preprocess=mvtec_128"
)
COMMANDS = {
    "table_1_1": "python -m polydefect -m +experiment=table_1_1",
    "table_4_1": "python -m polydefect -m +experiment=table_4_1",
    "anomaly_default": "python -m polydefect -m +experiment=real,synthetic,mixed model=cae,view_memory",
    "magnetic_tile": MAGNETIC_TILE_COMMANDS,
    "magnetic_tile_by_type": MAGNETIC_TILE_COMMANDS,
    "dev_sets": DEV_SETS_COMMANDS,
    "dev_sets_validation": DEV_SETS_COMMANDS,
}


def parent_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Finished pipeline (parent) runs of the experiment, newest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"--experiment: no MLflow experiment named {experiment!r} in {client.tracking_uri}")
    runs = client.search_runs(
        [found.experiment_id],
        "attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def latest(runs: list[Run], cell: Callable[[Run], tuple | None]) -> dict[tuple, Run]:
    """The newest run per cell; `cell` returns None for runs that belong to no cell of this table."""
    chosen: dict[tuple, Run] = {}
    for run in runs:  # newest first
        key = cell(run)
        if key is not None and key not in chosen:
            chosen[key] = run
    return chosen


def metric(run: Run | None, key: str) -> float:
    return run.data.metrics.get(key, math.nan) if run else math.nan


def run_id(run: Run | None) -> str:
    return run.info.run_id if run else ""


def tag_cell(*names: str) -> Callable[[Run], tuple | None]:
    """A cell key made of these tags, for runs that have all of them."""

    def cell(run: Run) -> tuple | None:
        tags = run.data.tags
        return tuple(tags[n] for n in names) if all(n in tags for n in names) else None

    return cell


def load_thesis_numbers(path: Path) -> dict[str, Any]:
    """The thesis' published numbers and the config choices of its table rows (experiments/thesis_numbers.yaml)."""
    if not path.is_file():
        raise SystemExit(f"--thesis-numbers: {path} does not exist (run from the repository root, or point at it)")
    return OmegaConf.to_container(OmegaConf.load(path))


def table_1_1(runs: list[Run], thesis: dict[str, Any]) -> Table:
    """Table 1.1: DAE and CAE x preprocessing (conf/ablation); F1 and AUROC with the global threshold."""
    cells = latest(runs, tag_cell("choice.model", "choice.ablation"))
    rows = []
    for row in thesis["rows"]:
        run = cells.get((row["model"], row["ablation"]))
        rows.append(
            {
                "model": row["model"].upper(),
                "preprocessing": thesis["preprocessing"][row["ablation"]],
                "f1": metric(run, "test/global/f1"),
                "auroc": metric(run, "test/global/image_auroc"),
                "thesis_f1": row["f1"],
                "thesis_auroc": row["auroc"],
                "run_id": run_id(run),
            }
        )
    return Table("table_1_1", "Table 1.1: DAE and CAE, trained and tested on real data", pd.DataFrame(rows))


def table_4_1(runs: list[Run], published: dict[str, Any]) -> Table:
    """Table 4.1: object segmentation of the real test batches by the U-Net (per training data) and baselines."""
    cells = latest(runs, tag_cell("choice.segbench"))
    rows = []
    for row in published["rows"]:
        run = cells.get((row["segbench"],))
        thesis = published["unet"].get(row["train_data"], {}) if row["segmenter"] == "unet" else {}
        rows.append(
            {
                "segmenter": row["segmenter"],
                "train_data": row["train_data"],
                **{m: metric(run, f"segment/test_{m}") for m in SEGMENT_METRICS},
                **{f"thesis_{m}": thesis.get(m, math.nan) for m in ("precision", "recall", "f1", "auc")},
                "run_id": run_id(run),
            }
        )
    return Table("table_4_1", "Table 4.1: object segmentation, tested on real batches 1-2", pd.DataFrame(rows))


def default_anomaly_cell(run: Run) -> tuple | None:
    """(model, train data) of the default anomaly runs: +experiment=real|synthetic|mixed or the thesis' cells."""
    tags = run.data.tags
    experiment, cell = tags.get("choice.experiment"), tags.get("choice.cell", "")
    if experiment in TRAIN_DATA or cell.startswith("anomaly_"):
        return tags.get("choice.model", ""), tags.get("variant", "")
    return None


def anomaly_default(runs: list[Run], thesis_auroc: dict[str, float]) -> Table:
    """Image-level detection with the default settings, per model, training data and threshold rule."""
    cells = latest(runs, default_anomaly_cell)
    models = sorted({model for model, _ in cells} | {"cae"})
    rows = []
    for model in models:
        for train_data in TRAIN_DATA:
            run = cells.get((model, train_data))
            thesis = thesis_auroc[train_data] if model == "cae" else math.nan
            for threshold in THRESHOLDS:
                rows.append(
                    {
                        "model": model,
                        "train_data": train_data,
                        "threshold": threshold,
                        **{m: metric(run, f"test/{threshold}/{m}") for m in IMAGE_METRICS},
                        "thesis_image_auroc": thesis,
                        "run_id": run_id(run),
                    }
                )
    return Table(
        "anomaly_default", "Defect detection with the default settings, tested on real batches 1-2", pd.DataFrame(rows)
    )


def detector_cell(run: Run) -> tuple | None:
    """(dataset, detector) of a run on MVTec-layout data outside the development sweeps: its data folder's name
    and its model (`choice.detector` in runs made before the `detector` group was folded into `model` and
    `preprocess=mvtec_128`). Runs made before runs were tagged with their data set were all on the magnetic
    tiles."""
    tags = run.data.tags
    if tags.get("variant") != "mvtec" or tags.get("experiment", "").startswith(DEV_SETS_NAME):
        return None
    name = tags.get("choice.detector") or tags.get("choice.model")
    return (tags.get("dataset", "magnetic_tile"), name) if name else None


def dev_cell(run: Run) -> tuple | None:
    """(dataset, configuration) of a development-set run: `+experiment=dev_sets` names its model; a run named
    `dev_sets_<option>` (an option measured on and off) is `<model> (<option>)`."""
    tags = run.data.tags
    experiment, model = tags.get("experiment", ""), tags.get("choice.model")
    if tags.get("variant") != "mvtec" or not model or not experiment.startswith(DEV_SETS_NAME):
        return None
    option = experiment.removeprefix(DEV_SETS_NAME).removeprefix("_")
    return tags.get("dataset", ""), f"{model} ({option})" if option else model


def detect_stage(client: MlflowClient, run: Run) -> Run | None:
    """The detect stage's run of a pipeline run (its training time and scoring speed)."""
    found = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.stage = 'detect'"
    )
    return found[0] if found else None


def detector_row(client: MlflowClient, run: Run) -> dict[str, Any]:
    """A detector's test figures, validation signal, training time and scoring speed."""
    detect = detect_stage(client, run)
    return {
        "image_auroc": metric(run, "test/global/image_auroc"),
        "image_auprc": metric(run, "test/global/image_auprc"),
        "f1": metric(run, "test/global/f1"),
        "pixel_auroc": metric(run, "test/pixel_auroc"),
        "aupro": metric(run, "test/aupro"),
        "val_synthetic_auroc": metric(run, "val/synthetic_image_auroc"),
        "train_s": metric(detect, "detect/train_s"),
        "infer_img_per_s": metric(detect, "detect/infer_img_per_s"),
        "run_id": run_id(run),
    }


def magnetic_tile(client: MlflowClient, runs: list[Run]) -> Table:
    """Every detector on the magnetic tiles (data=mvtec), with training time and scoring speed."""
    cells = latest(runs, detector_cell)
    rows = [
        {"detector": detector, **detector_row(client, run)}
        for (dataset, detector), run in sorted(cells.items())
        if dataset == "magnetic_tile"
    ]
    columns = ["detector", *(c for c in DETECTOR_COLUMNS if c != "val_synthetic_auroc")]
    return Table(
        "magnetic_tile",
        "Detectors on the magnetic-tile data (MVTec layout)",
        pd.DataFrame(rows, columns=[*columns, "run_id"]),
    )


def default_mvtec_model() -> str:
    """The model `python -m polydefect data=mvtec data.root=...` runs with no other override."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", ["data=mvtec", "data.root=."], return_hydra_config=True)
    return str(cfg.hydra.runtime.choices.model)


def chosen_label(detector: str, run: Run) -> str:
    """A configuration's name, with what it chose where it chose on the validation signal (model=auto)."""
    chosen = run.data.tags.get(CHOSEN_TAG)
    return f"{detector}: {chosen}" if chosen else detector


def dev_sets(client: MlflowClient, runs: list[Run]) -> Table:
    """Every detector on every development set, and the `default` row: the detector data=mvtec runs with."""
    cells = latest(runs, dev_cell)
    default = default_mvtec_model()
    rows = []
    for dataset in DEV_SETS:
        found = {detector: run for (name, detector), run in cells.items() if name == dataset}
        if default in found:
            rows.append({"dataset": dataset, "detector": "default", **detector_row(client, found[default])})
        rows += [
            {"dataset": dataset, "detector": chosen_label(d, found[d]), **detector_row(client, found[d])}
            for d in sorted(found)
        ]
    frame = pd.DataFrame(rows, columns=["dataset", "detector", *DETECTOR_COLUMNS, "run_id"])
    return Table("dev_sets", f"Every detector on the development sets (`default`: model={default})", frame)


def dev_sets_validation(dev: Table) -> Table:
    """Per development set, how well the validation signal (good held-out images against pasted anomalies, no
    test label read) ranks the detectors by test image AUROC: Spearman's rank correlation, and the detector it
    would choose with the test AUROC that choice gets, beside the best one's."""
    rows = []
    chose = dev.frame["detector"].str.contains(": ", regex=False)  # a choice among the rows, not a row of its own
    frame = dev.frame[(dev.frame["detector"] != "default") & ~chose]
    for dataset, group in frame.groupby("dataset", sort=False):
        known = group.dropna(subset=["val_synthetic_auroc", "image_auroc"])
        if known.empty:
            continue
        chosen = known.loc[known["val_synthetic_auroc"].idxmax()]
        rho = spearmanr(known["val_synthetic_auroc"], known["image_auroc"]).statistic if len(known) > 2 else math.nan
        rows.append(
            {
                "dataset": dataset,
                "detectors": len(known),
                "spearman_val_vs_test": float(rho),
                "chosen_by_val": chosen["detector"],
                "chosen_image_auroc": chosen["image_auroc"],
                "best_image_auroc": known["image_auroc"].max(),
            }
        )
    columns = ["dataset", "detectors", "spearman_val_vs_test", "chosen_by_val", "chosen_image_auroc"]
    return Table(
        "dev_sets_validation",
        "The validation signal against the test figures, per development set",
        pd.DataFrame(rows, columns=[*columns, "best_image_auroc"]),
    )


def magnetic_tile_by_type(runs: list[Run]) -> Table:
    """Per detector and defect type on MVTec-layout data: image AUROC (that type against the good images) and
    pixel AUROC, from the `test/type/<type>/...` metrics of the evaluate stage."""
    cells = latest(runs, detector_cell)
    rows = []
    for (dataset, detector), run in sorted(cells.items()):
        if dataset != "magnetic_tile":
            continue
        types = sorted({key.split("/")[2] for key in run.data.metrics if key.startswith("test/type/")})
        for name in types:
            row = {"detector": detector, "defect_type": name}
            row.update({m: metric(run, f"test/type/{name}/{m}") for m in ("images", "image_auroc", "pixel_auroc")})
            rows.append(row)
    columns = ["detector", "defect_type", "images", "image_auroc", "pixel_auroc"]
    return Table(
        "magnetic_tile_by_type",
        "Detectors on the magnetic-tile data, per defect type",
        pd.DataFrame(rows, columns=columns).astype({"images": "Int64"}),
    )


def to_markdown(table: Table, source: str) -> str:
    """A GitHub Markdown table; empty cells where a run or a published number is missing."""
    frame = table.frame.astype(object).where(table.frame.notna(), "")
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [
        f"# {table.title}",
        "",
        "| " + " | ".join(frame.columns) + " |",
        "|" + "|".join("---" for _ in frame.columns) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)),
        "",
        f"Ours: the latest finished run per row in {source}. `thesis_*`: the numbers published in the thesis.",
        "",
        f"Made by `{COMMANDS[table.name]}`, then `python -m polydefect.tables`.",
        "",
    ]
    return "\n".join(lines)


def write_tables(tracking_uri: str, experiment: str, out: Path, thesis_numbers: Path = THESIS_NUMBERS) -> list[Path]:
    """Build every table from the experiment's runs and write `<name>.md` and `<name>.csv` into `out`."""
    client = MlflowClient(tracking_uri)
    runs = parent_runs(client, experiment)
    thesis = load_thesis_numbers(thesis_numbers)
    log.info("%d finished runs in %s, experiment %s", len(runs), tracking_uri, experiment)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    dev = dev_sets(client, runs)
    for table in (
        table_1_1(runs, thesis["table_1_1"]),
        table_4_1(runs, thesis["table_4_1"]),
        anomaly_default(runs, thesis["anomaly_auroc"]),
        magnetic_tile(client, runs),
        magnetic_tile_by_type(runs),
        dev,
        dev_sets_validation(dev),
    ):
        table.frame.to_csv(out / f"{table.name}.csv", index=False)
        (out / f"{table.name}.md").write_text(to_markdown(table, f"`{tracking_uri}`, experiment `{experiment}`"))
        written += [out / f"{table.name}.md", out / f"{table.name}.csv"]
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m polydefect.tables", description=__doc__)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default: %(default)s)")
    parser.add_argument("--experiment", default="polydefect", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("experiments/tables"), help="folder (default: %(default)s)")
    parser.add_argument(
        "--thesis-numbers", type=Path, default=THESIS_NUMBERS, help="the thesis' numbers (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in write_tables(args.tracking_uri, args.experiment, args.out, args.thesis_numbers):
        print(path)


if __name__ == "__main__":
    main()
