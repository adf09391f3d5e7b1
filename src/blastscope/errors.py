"""The base of every error blastscope raises on purpose.

Each module keeps its own error (``ImageInputError`` in ``io``, ``SegmentationError`` in
``segment``, ``BundleError`` in ``models.bundle`` ...), and every one derives from
:class:`BlastscopeError`, a :class:`ValueError`: ``except BlastscopeError`` catches all of them
(the CLI's ``main`` does), and code that catches ``ValueError`` keeps working. Their messages
say what was wrong and what to do.
"""

from __future__ import annotations


class BlastscopeError(ValueError):
    """An input or a state blastscope cannot work with; the message says why and what to do."""


class ExportError(BlastscopeError):
    """An export that cannot be written; the message says why and what to do.

    Defined here rather than in :mod:`blastscope.export` because :mod:`blastscope.jsonable`
    raises it, and the core must not import the exporters.
    """
