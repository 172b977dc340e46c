"""Where the MovieLens ml-latest-small copy is read in place (never copied into the repository: see its
license): `shared/data/` beside the checkout, or the machine's /work/shared/data."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = (
    REPO.parent / "shared" / "data" / "movielens-latest-small",
    Path("/work/shared/data/movielens-latest-small"),
)
MOVIELENS = next((path for path in CANDIDATES if path.is_dir()), CANDIDATES[0])
"""The first copy found (the one beside the checkout when there is none, for the skip message)."""
