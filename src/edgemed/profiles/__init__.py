"""edgemed.profiles."""
