"""Wire messages built on the device's hot path."""

from __future__ import annotations

import pytest

from shared_schema import RankedItem, RerankResult


@pytest.mark.parametrize("title", [None, "Cats at sea"])
def test_checked_ranked_item_equals_a_validated_one(title):
    fast = RankedItem.checked("v17", "video", 1.37, title)
    slow = RankedItem(item_id="v17", source="video", score=1.37, title=title)
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert repr(fast) == repr(slow)
    assert (
        fast.model_fields_set
        == RankedItem.model_construct(item_id="v17", source="video", score=1.37, title=title).model_fields_set
    )
    fast.score = 2.0  # an ordinary, mutable model
    assert fast.score == 2.0 and "score" in fast.model_fields_set
    result = RerankResult.model_validate(
        {
            "request_id": "r",
            "items": [fast.model_dump()],
            "backend": "tflite",
            "delegate": "cpu",
            "merge": "score",
            "bundle_version": "b",
            "timings_ms": {},
        }
    )
    assert result.items[0] == fast
