"""Compute only: a model (any module mapping (B, 3, H, W) images in [0, 1] to (B, C, h, w) feature
maps) and images in, a result out; nothing is written to disk. Kept free of imports here, so that
the corruption workers (``analyses.corruption``) do not load the rest."""
