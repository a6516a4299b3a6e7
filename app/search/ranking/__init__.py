"""Scoring modes of text search, one module each (cosine, concept, label, joint): functions
told what they need (the store, the embedder, the filter, k), never the service."""
