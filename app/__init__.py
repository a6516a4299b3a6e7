"""devise-search: app package."""
