"""pruning layer."""
