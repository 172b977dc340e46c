"""Training: the config (config.py), the loop (trainer.py), its objective and distributed sums (objective.py,
distributed.py), losses, checkpoints and run folders (checkpoint.py, runs.py), per-epoch output (epoch_log.py)
and hyperparameter tuning (tuning.py)."""
