"""edgemed.io."""
