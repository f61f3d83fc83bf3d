"""Audio helpers: reading and writing files, the output check."""
