"""neural-tangents' pinned legacy virtualenv, created on demand by the benchmarks (never by CI).

neural-tangents 0.6.5 imports only with jax 0.4.25 and numpy < 2 (see the team's DESIGN notes).
``run_in_legacy_env(code)`` runs a Python snippet there and returns the JSON it prints last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

VENV = Path(__file__).with_name(".nt-legacy-venv")
PINS = [
    "jax==0.4.25",
    "jaxlib==0.4.25",
    "numpy==1.26.4",
    "tf2jax==0.3.6",
    "tensorflow-cpu==2.21.0",
    "neural-tangents==0.6.5",
]


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_legacy_venv() -> Path:
    """Create the pinned virtualenv once (about 2.6 GB, a few minutes); return its python."""
    if not python().exists() or subprocess.run(
        [python(), "-c", "import neural_tangents"], capture_output=True, check=False
    ).returncode != 0:
        print(f"creating neural-tangents legacy env in {VENV} ...", file=sys.stderr)
        venv.create(VENV, with_pip=True, clear=True)
        subprocess.run([python(), "-m", "pip", "install", "-q", *PINS], check=True)
    return python()


def run_in_legacy_env(code: str, timeout: int = 3600) -> dict:
    """Run ``code`` with the legacy interpreter; it must print one JSON object as its last line."""
    out = subprocess.run([ensure_legacy_venv(), "-c", code], capture_output=True, text=True,
                         check=False, timeout=timeout,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if out.returncode != 0:
        raise RuntimeError(f"legacy neural-tangents run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
