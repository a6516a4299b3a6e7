"""Background work of a running app: the index job, the graph job, the folder watcher."""
