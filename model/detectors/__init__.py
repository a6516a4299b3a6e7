"""Detectors that add concepts the ImageNet-1k classifier lacks (a face: `person`)."""
