"""Load a prepared DATA folder; split arrays are memory-mapped, nothing is read until used.

data = PreparedData("my_data")
data.spec.n, data.num_items["video"]
train = data.split("train")           # {"cand_item": memmap, "hist_device": memmap, ...}
train["cand_item"][:64]               # int64 [64, m, n], item index within source, -1 = padding
data.items("video").dense             # float32 [N_s, D_s]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cloud.data.logs import ItemTable
from shared_schema.specs import SCHEMA_VERSION, DatasetSpec

SPLITS = ("train", "valid", "test")
ARRAYS = (
    "user",
    "ts",
    "cand_item",
    "label",
    "click_prob",
    "position",
    "hist_device",
    "hist_cloud",
    "hist_device_age",
    "hist_cloud_age",
)


class PreparedData:
    """A DATA folder written by `dir-cloud prepare`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path}: not found; create DATA with `dir-cloud prepare --logs LOGS --out DATA`"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path}: not valid JSON ({exc}); re-run `dir-cloud prepare`") from exc
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{meta_path}: schema_version {meta.get('schema_version')!r} but this code reads {SCHEMA_VERSION}; "
                "re-run `dir-cloud prepare` on the LOGS folder with this version"
            )
        self.spec = DatasetSpec.model_validate(meta["spec"])
        self.stats: dict = meta["stats"]
        self.num_items: dict[str, int] = meta["num_items"]
        self.num_users: int = meta["num_users"]
        self.has_click_prob: bool = meta["has_click_prob"]

    def split(self, name: str) -> dict[str, np.ndarray]:
        """The memory-mapped arrays of "train", "valid" or "test", by name (see docs/data.md)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return {key: self._load(self.path / name / f"{key}.npy") for key in ARRAYS}

    def items(self, source: str) -> ItemTable:
        """Item ids, categorical ids and dense features of one source (row i = item index i)."""
        self.spec.source(source)  # KeyError naming the known sources
        folder = self.path / "items" / source
        return ItemTable(
            ids=self._load(folder / "ids.npy"),
            categorical=self._load(folder / "categorical.npy"),
            dense=self._load(folder / "dense.npy"),
        )

    def item_tables(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(categorical, dense) of every source in dataset order, as cloud.data.batches.ListBatcher takes them."""
        return [(table.categorical, table.dense) for table in map(self.items, self.spec.source_names)]

    def users(self) -> np.ndarray:
        """Original user ids (row u = user index u)."""
        return self._load(self.path / "users.npy")

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the prepared data; re-run `dir-cloud prepare`")
        return np.load(path, mmap_mode="r")
