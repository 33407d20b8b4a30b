"""Object stores: the ``Store`` protocol and its S3 implementation."""

from .base import ObjectInfo, Store

__all__ = ["ObjectInfo", "Store"]
