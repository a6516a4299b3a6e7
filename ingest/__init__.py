"""devise-search: ingest package."""
