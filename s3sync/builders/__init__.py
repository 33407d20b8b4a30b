"""Builders: one module per dataset, each making a dataset directory from its original
sources (``s3sync build NAME DIR``). Pipelines: they use the machinery (stores, engine,
zipstream) and return frozen dataclasses; they never print."""
