"""Training: the loop, the method hooks and self-describing checkpoints."""
