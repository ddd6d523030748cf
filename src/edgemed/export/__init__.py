"""edgemed.export."""
