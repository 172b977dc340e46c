"""Training: the trainer loop, its objective and distributed sums, losses, run folders."""
