"""What every benchmark writes beside its figures: the machine, the versions and the command that gave them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    """Machine, library versions, git revision and the exact command line of this run."""
    from tether.core.runs import environment as measured_on

    return {"command": "python " + shlex.join(sys.argv), **measured_on(extra_packages=("trl",))}


def emit(result: dict[str, Any], path: Path | None) -> None:
    """Print ``result`` as JSON and, with a path, write it there with the environment beside it."""
    print(json.dumps(result, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"environment": environment(), **result}, indent=2) + "\n")
