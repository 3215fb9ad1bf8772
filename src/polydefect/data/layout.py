"""Find the images of a data set on disk: one table row per image, for the thesis and MVTec AD layouts.

Both layouts give the same table (see `COLUMNS`), so a split is a filter on its columns and every
later stage reads rows, never folders.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
COLUMNS = [
    "row_id",  # str: the image's path below the data folder, its key from discovery to verdict
    "image_path",  # str, absolute
    "object_mask_path",  # str or None: None means "the whole frame is the object"
    "defect_mask_path",  # str or None: None means "no pixel annotation"
    "batch",  # int: thesis batch number; 0 for MVTec train, 1 for MVTec test
    "view",  # str: view key, the same across batches (thesis: file stem, e.g. "p03_c1")
    "position",  # int: scanner position (thesis), -1 if unknown
    "camera",  # int: camera of the scanner pair (thesis), -1 if unknown
    "label",  # int: 1 defective, 0 good
    "defect_type",  # str: "good", or the defect class
    "split",  # str: "train" / "test" where the layout fixes it, else ""
]
_VIEW_PATTERN = re.compile(r"^p(\d+)_c(\d+)$")
_BATCH_PATTERN = re.compile(r"(\d+)$")


class DataLayoutError(ValueError):
    """A data folder does not follow its layout; the message names the path and the problem."""


def _image_files(folder: Path) -> list[Path]:
    """Images in a folder, sorted; any other visible file is an error, not silently skipped."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    unknown = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if unknown:
        raise DataLayoutError(
            f"{unknown[0]}: unknown file type {unknown[0].suffix!r}; "
            f"image folders may hold only {sorted(IMAGE_SUFFIXES)}"
        )
    return files


def _find_by_stem(folder: Path, stem: str) -> Path | None:
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _batch_number(folder: Path) -> int:
    match = _BATCH_PATTERN.search(folder.name)
    if not match:
        raise DataLayoutError(f"{folder}: a batch folder name must end in its number, e.g. batch_01")
    return int(match.group(1))


def _read_batch_labels(root: Path) -> dict[int, int]:
    path = root / "labels.csv"
    if not path.is_file():
        return {}
    labels: dict[int, int] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"batch", "label"} <= set(reader.fieldnames):
            raise DataLayoutError(f"{path}: needs the columns 'batch' and 'label'")
        for line, row in enumerate(reader, start=2):
            try:
                labels[int(row["batch"])] = int(row["label"])
            except (TypeError, ValueError) as error:
                raise DataLayoutError(f"{path}:{line}: batch and label must be integers ({error})") from None
    return labels


def discover_thesis(root: str | Path) -> pd.DataFrame:
    """Read the thesis layout: ``root/batch_NN/{images,object_masks,defect_masks}/<view>.<ext>``.

    `object_masks/` is optional as a folder, but where it exists every image needs its mask.
    An image is defective when it has a file in `defect_masks/` (which may be empty of pixels)
    or when `root/labels.csv` (columns batch,label) marks its whole batch defective.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataLayoutError(f"{root}: data folder does not exist")
    batch_dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "images").is_dir())
    if not batch_dirs:
        raise DataLayoutError(f"{root}: no batch folders with an images/ folder (expected batch_NN/images/)")
    batch_labels = _read_batch_labels(root)
    rows = []
    for batch_dir in batch_dirs:
        batch = _batch_number(batch_dir)
        object_dir, defect_dir = batch_dir / "object_masks", batch_dir / "defect_masks"
        images = _image_files(batch_dir / "images")
        if not images:
            raise DataLayoutError(f"{batch_dir / 'images'}: empty image folder")
        for image in images:
            object_mask = None
            if object_dir.is_dir():
                object_mask = _find_by_stem(object_dir, image.stem)
                if object_mask is None:
                    raise DataLayoutError(f"{image}: missing object mask {object_dir / image.stem}.png")
            defect_mask = _find_by_stem(defect_dir, image.stem) if defect_dir.is_dir() else None
            label = 1 if defect_mask is not None else batch_labels.get(batch, 0)
            view_match = _VIEW_PATTERN.match(image.stem)
            rows.append(
                {
                    "row_id": image.relative_to(root).as_posix(),
                    "image_path": str(image),
                    "object_mask_path": str(object_mask) if object_mask else None,
                    "defect_mask_path": str(defect_mask) if defect_mask else None,
                    "batch": batch,
                    "view": image.stem,
                    "position": int(view_match.group(1)) if view_match else -1,
                    "camera": int(view_match.group(2)) if view_match else -1,
                    "label": label,
                    "defect_type": "defect" if label else "good",
                    "split": "",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def discover_mvtec(root: str | Path) -> pd.DataFrame:
    """Read the MVTec AD layout: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``, and
    where a set has them (polydefect's posed renders), object masks ``object_masks/<split>/<type>/<stem>.png``.

    Every image is its own view ("all"): MVTec sets have one viewpoint per category.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataLayoutError(f"{root}: data folder does not exist")
    train_good = root / "train" / "good"
    if not train_good.is_dir():
        raise DataLayoutError(f"{root}: no train/good folder (MVTec AD layout)")
    rows = []
    for split, batch in (("train", 0), ("test", 1)):
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            defect_type = type_dir.name
            for image in _image_files(type_dir):
                defect_mask = None
                if defect_type != "good":
                    defect_mask = _find_by_stem(root / "ground_truth" / defect_type, f"{image.stem}_mask")
                object_mask = _find_by_stem(root / "object_masks" / split / defect_type, image.stem)
                rows.append(
                    {
                        "row_id": image.relative_to(root).as_posix(),
                        "image_path": str(image),
                        "object_mask_path": str(object_mask) if object_mask else None,
                        "defect_mask_path": str(defect_mask) if defect_mask else None,
                        "batch": batch,
                        "view": "all",
                        "position": -1,
                        "camera": -1,
                        "label": int(defect_type != "good"),
                        "defect_type": defect_type,
                        "split": split,
                    }
                )
    table = pd.DataFrame(rows, columns=COLUMNS)
    if not ((table["split"] == "train") & (table["label"] == 0)).any():
        raise DataLayoutError(f"{train_good}: no good training images")
    return table


def detect_layout(root: str | Path) -> str:
    """'mvtec' if the folder has train/good, else 'thesis'."""
    return "mvtec" if (Path(root).expanduser() / "train" / "good").is_dir() else "thesis"


def discover(root: str | Path, layout: str = "auto") -> pd.DataFrame:
    """The sample table of a data folder in the given layout ('thesis', 'mvtec' or 'auto')."""
    if layout == "auto":
        layout = detect_layout(root)
    readers = {"thesis": discover_thesis, "mvtec": discover_mvtec}
    if layout not in readers:
        raise DataLayoutError(f"data.layout: unknown layout {layout!r}; choose one of {sorted(readers)} or auto")
    return readers[layout](root)
