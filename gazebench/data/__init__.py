"""Datasets: Sample/Batch, readers, gaze maps, the embedded synthetic dataset."""

# the embedded dataset that `run` and `train` use when no --data is given
DEFAULT_SYNTH_N = 600
DEFAULT_SYNTH_SEED = 0
