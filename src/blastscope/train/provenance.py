"""What a training run records about where it came from: its command and the git commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def git_commit() -> str | None:
    """The git commit of the blastscope source tree, or None outside a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None


def command_line() -> str:
    """The command that started this process, as typed (best effort)."""
    program = Path(sys.argv[0]).name if sys.argv else "python"
    return " ".join([program, *sys.argv[1:]])
