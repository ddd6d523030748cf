"""edgemed.models."""
