"""The search: the service that chooses and composes, and what it composes: query reading,
filters, ranking, tags, duplicates. No argparse and no gradio here."""
