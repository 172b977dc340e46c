"""The padded input layout and its reusable buffers."""

from __future__ import annotations

import numpy as np
import pytest

from shared_schema.layout import InputBuffers, TensorLayout


def test_input_buffers_equal_a_fresh_assembly_as_lists_grow_shrink_and_empty():
    layout = TensorLayout(vector_dims=(3, 2), n=4, t=5)
    buffers = InputBuffers(layout)
    rng = np.random.default_rng(0)
    for cand_rows, hist_rows in [
        ((4, 2), (7, 0)),
        ((1, 0), (2, 5)),
        ((3, 4), (0, 1)),
        ((0, 2), (5, 5)),
        ((4, 4), (3, 3)),
    ]:
        cands = [rng.standard_normal((k, d)).astype(np.float32) for k, d in zip(cand_rows, layout.vector_dims)]
        hists = [rng.standard_normal((h, d)).astype(np.float32) for h, d in zip(hist_rows, layout.vector_dims)]
        filled = buffers.fill(cands, hists)
        expected = layout.assemble(cands, hists)
        assert list(filled) == list(expected) == layout.input_names()
        for name in expected:
            assert filled[name].dtype == np.float32 and np.array_equal(filled[name], expected[name]), name


@pytest.mark.parametrize(
    ("cands", "message"),
    [
        (
            [np.zeros((5, 3), np.float32), np.zeros((0, 2), np.float32)],
            r"candidates of source 0: expected shape \[k <= 4, 3\], got \[5, 3\]",
        ),
        (
            [np.zeros((1, 3), np.float32), np.zeros((1, 1), np.float32)],
            r"candidates of source 1: expected shape \[k <= 4, 2\], got \[1, 1\]",
        ),
        ([np.zeros((1, 3), np.float32)], "expected 2 candidate and history arrays"),
    ],
)
def test_input_buffers_refuse_arrays_that_do_not_fit(cands, message):
    layout = TensorLayout(vector_dims=(3, 2), n=4, t=5)
    with pytest.raises(ValueError, match=message):
        InputBuffers(layout).fill(cands, [np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)])
