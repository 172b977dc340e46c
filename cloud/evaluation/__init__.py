"""Evaluation: metrics, scoring a split, run evaluation, grids and their statistics."""
