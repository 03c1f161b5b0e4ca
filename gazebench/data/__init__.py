"""Datasets: Sample/Batch, readers, gaze maps, the embedded synthetic dataset."""
