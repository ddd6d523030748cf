"""edgemed.runtime."""
