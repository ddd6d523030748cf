"""edgemed.compress."""
