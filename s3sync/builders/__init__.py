"""Builders: one module per dataset made from its original sources (``s3sync build NAME``),
plus ``listcrawl``, the crawl of a URL list that several of them share."""
