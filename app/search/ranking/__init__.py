"""Scoring modes of text search, each a small module with one entry point."""
