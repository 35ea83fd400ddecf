"""Whether pip can reach its package index: the one reason the install tests may skip.

An install that fails while the index answers is a failure (an unsatisfiable pin, a missing wheel), never a
skip, so the probe asks the index about a package every index has before the install runs.
"""

from __future__ import annotations

import subprocess
import sys


def index_unreachable(package: str = "numpy", python: str = sys.executable) -> str | None:
    """Why pip cannot list ``package``'s versions from its configured index (proxies, certificates, extra
    indexes included), or None when it can."""
    try:
        probe = subprocess.run([python, "-m", "pip", "index", "versions", package], capture_output=True, text=True,
                               timeout=180, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "pip index versions timed out"
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    return lines[-1] if lines else f"pip index versions exited {probe.returncode}"
