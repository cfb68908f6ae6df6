"""A run and its directory: train/evaluate pipelines, checkpoints and signals, sweeps."""
