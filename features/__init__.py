"""The persona feature catalogue and its computation."""
