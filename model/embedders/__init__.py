"""The embedders: DeViSE, ConSE and CLIP, their base, and the factory that picks one.

Kept light: nothing is imported here, so importing a submodule pulls in only what it needs.
"""
