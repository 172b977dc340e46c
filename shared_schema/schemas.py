"""JSON Schema (draft 2020-12) files of the wire messages, as committed in docs/schemas/.

    write_schemas("docs/schemas")        # one <Message>.json per message
    stale_schemas("docs/schemas")        # files that differ from the models (empty when current)

`dir-cloud schemas` runs these; docs/slate.md explains the fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from shared_schema.messages import BehaviorEvent, CandidateSlate, RerankResult
from shared_schema.service import BundleList, ItemVectors, ListSlate, ServiceInfo, VectorRequest

MESSAGES: tuple[type[BaseModel], ...] = (
    CandidateSlate,
    BehaviorEvent,
    RerankResult,
    VectorRequest,
    ItemVectors,
    ListSlate,
    BundleList,
    ServiceInfo,
)
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, str]:
    """File name -> schema text (sorted keys, 2-space indent, trailing newline) of every wire message."""
    out = {}
    for model in MESSAGES:
        schema = {"$schema": DIALECT, **model.model_json_schema(mode="validation")}
        out[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def write_schemas(folder: str | Path) -> list[Path]:
    """Write every message's schema into `folder` (created if missing); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in json_schemas().items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written


def stale_schemas(folder: str | Path) -> list[str]:
    """Names of the schema files in `folder` that are missing or differ from the current models."""
    folder = Path(folder)
    return [
        name
        for name, text in json_schemas().items()
        if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text
    ]
