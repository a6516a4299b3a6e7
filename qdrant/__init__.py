"""devise-search: qdrant package."""
