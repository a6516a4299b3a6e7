"""devise-search: model package."""
