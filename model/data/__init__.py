"""Data: image decoding, batch loading, feature extraction and the datasets.

Kept light: nothing is imported here, so importing a submodule pulls in only what it needs.
"""
