"""Beyond one build: the image matrix for a CI engine, and the release tree made of
many builds' outputs (Debian cdimage's layout, checksums, one report, an index)."""
