"""Turn data config into train / validation / test tables (thesis 4.1.1 and 5.6.1).

Tests are always on real images: the real data's test batches (thesis layout) or its test folder (MVTec).
Training draws on the domains the variant names; mixed is the union of real and synthetic training sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polydefect.data.layout import DataLayoutError, detect_layout, discover

DOMAINS = ("real", "synthetic")


@dataclass
class DataSplits:
    """Sample tables (see `polydefect.data.layout.COLUMNS` plus `domain`) for each role."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def all(self) -> pd.DataFrame:
        return pd.concat([self.train, self.val, self.test], ignore_index=True)

    def map(self, change: Callable[[pd.DataFrame], pd.DataFrame]) -> DataSplits:
        """The same splits with `change` applied to each table (e.g. a column added)."""
        return DataSplits(train=change(self.train), val=change(self.val), test=change(self.test))


def hold_out(table: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded random split of a table into (kept, held_out), at least one row held out when fraction > 0."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(table))
    count = 0 if fraction == 0 else max(1, round(fraction * len(table)))
    held = np.zeros(len(table), bool)
    held[order[:count]] = True
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True)


def _with_domain(table: pd.DataFrame, domain: str) -> pd.DataFrame:
    """The domain as a column and in the row ids, which then stay unique when real and synthetic mix."""
    return table.assign(domain=domain, row_id=domain + "/" + table["row_id"])


def make_splits(data: Any, roots: dict[str, Path], seed: int) -> DataSplits:
    """Build the splits of a run.

    Args:
        data: the `data` config node.
        roots: folder of each domain the run uses ("real", and "synthetic" if trained on).
        seed: seeds the validation hold-out.
    """
    unknown = set(data.train_domains) - set(DOMAINS)
    if unknown or not data.train_domains:
        raise DataLayoutError(
            f"data.train_domains: expected a non-empty subset of {DOMAINS}, got {list(data.train_domains)}"
        )
    layout = detect_layout(roots["real"]) if data.layout == "auto" else data.layout
    real = _with_domain(discover(roots["real"], layout), "real")
    if layout == "mvtec":
        test = real[real["split"] == "test"]
        real_train = real[(real["split"] == "train") & (real["label"] == 0)]
        where = f"{roots['real']}/test"
    else:
        in_test = real["batch"].isin(list(data.test_batches))
        test, real_train = real[in_test], real[~in_test]
        where = f"data.test_batches={list(data.test_batches)} in {roots['real']}"
    if test.empty:
        raise DataLayoutError(f"no test images: {where}")
    pools = []
    if "real" in data.train_domains:
        pools.append(real_train)
    if "synthetic" in data.train_domains:
        pools.append(_with_domain(discover(roots["synthetic"], "auto"), "synthetic"))
    pool = pd.concat(pools, ignore_index=True)
    if pool.empty:
        raise DataLayoutError(f"no training images for data.train_domains={list(data.train_domains)}")
    train, val = hold_out(pool, data.val_fraction, seed)
    return DataSplits(train=train, val=val, test=test.reset_index(drop=True))
