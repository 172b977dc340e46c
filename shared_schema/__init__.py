"""The contract between the cloud trainer and the device runtime (no torch here).

`specs`: sources, their features and the dataset's shape; `layout`: the fixed padded tensor
layout the exported device model consumes; `messages`: versioned wire messages;
`manifest`: the model bundle's manifest.
"""

from shared_schema.layout import TensorLayout, TensorSpec
from shared_schema.manifest import BundleFile, BundleManifest
from shared_schema.messages import (
    BehaviorEvent,
    CandidateItem,
    CandidateSlate,
    RankedItem,
    RerankResult,
    SourceCandidates,
)
from shared_schema.specs import (
    SCHEMA_VERSION,
    CategoricalField,
    DatasetSpec,
    DenseField,
    SourceSpec,
)

__all__ = [
    "SCHEMA_VERSION",
    "BehaviorEvent",
    "BundleFile",
    "BundleManifest",
    "CandidateItem",
    "CandidateSlate",
    "CategoricalField",
    "DatasetSpec",
    "DenseField",
    "RankedItem",
    "RerankResult",
    "SourceCandidates",
    "SourceSpec",
    "TensorLayout",
    "TensorSpec",
]
