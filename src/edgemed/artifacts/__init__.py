"""edgemed.artifacts."""
