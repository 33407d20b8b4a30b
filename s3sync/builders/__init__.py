"""Builders: one module per dataset, each making a dataset directory from its original
sources (``s3sync build NAME DIR``), plus ``listcrawl``, the crawl of a URL list that several
of them share. Pipelines: they use the machinery (stores, engine, zipstream, crawl) and
return frozen dataclasses; they never print."""
