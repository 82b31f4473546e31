"""Coverage-guided fuzz targets, one per parser of untrusted input (``./run fuzz``)."""
