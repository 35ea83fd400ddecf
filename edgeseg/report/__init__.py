"""Reports (layer 4): report.json + report.md (writer, markdown) and PNG plots (matplotlib, lazily).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "write_report": ".writer",
    "render_markdown": ".markdown",
}

__all__ = [*_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
