"""The progress protocol that pipelines report to; rendering lives in ``ui.py``.

Pipelines call these methods from any thread; implementations must be thread-safe.
Quantities are bytes, except in the stages named in ``ITEM_STAGES``, which count items
(a crawl's images: done, failed). A retried chunk calls ``advance`` with a negative count to
rewind what its failed attempt had counted, so a display never passes 100%.
"""

from __future__ import annotations

from typing import Protocol

ITEM_STAGES = frozenset({"crawl", "failed"})
"""Stages whose units are items (images of a crawl), not bytes: ``crawl`` counts the items
done (stored or failed), ``failed`` those that failed."""


class Progress(Protocol):
    """What a pipeline reports while it runs."""

    def start(self, stage: str, total: int) -> None:
        """A stage begins (``download``, ``extract``, ``upload``...), ``total`` bytes expected
        (0: unknown, e.g. the extracted size of a compressed archive); called again for a
        stage already begun, it corrects the total (it was an estimate)."""

    def advance(self, stage: str, n: int) -> None:
        """``n`` more bytes done in ``stage`` (negative to rewind after a retry)."""

    def message(self, text: str) -> None:
        """A one-line note for the user (retries, resume points); not an error. Shown with
        ``-v`` only, unless it starts with ``warning: ``."""

    def finish(self, stage: str) -> None:
        """The stage is complete."""


class NullProgress:
    """Reports nothing; the default for library callers."""

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, n: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass
