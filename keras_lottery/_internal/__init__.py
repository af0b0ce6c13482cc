"""_internal layer."""
