"""The wheelhouse the image is built from: the venv's runtime dependencies as wheels.

Run it with the project's virtual environment (``make image`` does)::

    .venv/bin/python deploy/image/wheelhouse.py build/image/wheelhouse [--torch-index URL]

It pins the runtime dependency closure of the installed ``lensnet-broker`` (no extras) to the
versions installed in this environment, resolves it with pip against those pins (PyPI, plus
``--torch-index`` for torch: the CPU-only wheels live on PyTorch's own index), downloads the
wheels once per machine into a cache, and lays out the output folder with hard links to exactly
those wheels and two hash-pinned requirement files:

- ``requirements.txt``: what the image installs into ``/opt/lensnet`` (the runtime closure);
- ``tools.txt``: what builds the image and is not shipped (uv, the project's build backend).

The image build then installs with ``--no-index`` and runs without a network. Without
``--torch-index`` the resolution must give exactly the venv's versions, or this fails; with it,
torch and whatever its wheel requires differ (no CUDA libraries), everything else is pinned.

A second run with the same inputs (pins, index, tool versions) does nothing: the folder records
them in ``.inputs``. Each resolution is also kept per machine (``~/.cache/lensnet-image/locks``),
so a fresh clone lays the folder out from the cached wheels without asking an index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "lensnet-broker"
#: Build backend of the project (pyproject.toml [build-system]); pinned so builds repeat.
HATCHLING_VERSION = "1.33.0"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lensnet-image"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
#: Bump when the layout of the output folder changes, so old folders are rebuilt.
LAYOUT = 1


class WheelhouseError(RuntimeError):
    """The wheelhouse could not be resolved or laid out."""


@dataclass(frozen=True)
class Wheel:
    """One resolved distribution: its wheel's download address and SHA-256."""

    name: str
    version: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("#", 1)[0]

    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def runtime_pins(project: str = PROJECT) -> dict[str, str]:
    """Canonical name -> installed version of every runtime dependency of ``project``.

    Walks the installed distributions' requirements, evaluating markers for this interpreter
    and the extras actually requested; the project's own extras (plot, dev) are not followed.
    """
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(project, frozenset())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as error:
            raise WheelhouseError(f"{name} is required but not installed: make install") from error
        key = canonicalize_name(dist.metadata["Name"])
        if key in pins:
            continue
        pins[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = extras or frozenset({""})
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    del pins[canonicalize_name(project)]
    return pins


def installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError as error:
        raise WheelhouseError(f"{name} is not installed in {sys.prefix}: make install") from error


def resolve(
    requirements: Iterable[str], constraints: dict[str, str], torch_index: str | None
) -> list[Wheel]:
    """Wheels pip would install for ``requirements`` under ``constraints`` (binary only)."""
    with tempfile.TemporaryDirectory(prefix="lensnet-wheelhouse-") as tmp:
        constraints_file = Path(tmp) / "constraints.txt"
        constraints_file.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
        report = Path(tmp) / "report.json"
        command = [*PIP, "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
        command += ["--report", str(report), "--constraint", str(constraints_file)]
        if torch_index:
            command += ["--extra-index-url", torch_index]
        done = subprocess.run([*command, *requirements], capture_output=True, text=True)
        if done.returncode != 0:
            raise WheelhouseError(f"pip could not resolve the image's dependencies:\n{done.stderr}")
        installs = json.loads(report.read_text())["install"]
    wheels = []
    for item in installs:
        info = item["download_info"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        if "sha256" not in hashes:
            raise WheelhouseError(f"{info['url']}: the index gave no sha256")
        wheels.append(
            Wheel(
                name=canonicalize_name(item["metadata"]["name"]),
                version=item["metadata"]["version"],
                url=info["url"],
                sha256=hashes["sha256"],
            )
        )
    return sorted(wheels, key=lambda wheel: wheel.name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(wheels: Iterable[Wheel], cache: Path) -> None:
    """Download the wheels missing from ``cache`` (pip, so its proxy/certificate settings hold)
    and check their SHA-256; a wheel already in the cache was checked when it arrived."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [w for w in wheels if not (cache / w.filename).is_file()]
    if not missing:
        return
    print(f"wheelhouse: downloading {len(missing)} wheels into {cache}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        command = [*PIP, "download", "--no-deps", "--no-cache-dir", "--dest", tmp]
        if subprocess.run([*command, *(w.url for w in missing)]).returncode != 0:
            raise WheelhouseError("pip download failed (see above)")
        for wheel in missing:
            path = Path(tmp) / wheel.filename
            if not path.is_file():
                raise WheelhouseError(f"pip download gave no {wheel.filename}")
            if sha256_of(path) != wheel.sha256:
                raise WheelhouseError(f"{wheel.url}: sha256 differs from the index's")
            path.rename(cache / wheel.filename)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def lay_out(out: Path, cache: Path, sets: dict[str, list[Wheel]], inputs: str) -> None:
    """``out`` holds exactly the wheels of ``sets`` and one requirements file per set."""
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for filename, wheels in sets.items():
        lines = [f"# {filename}: made by deploy/image/wheelhouse.py; do not edit\n"]
        lines += [wheel.requirement() + "\n" for wheel in wheels]
        (staging / filename).write_text("".join(lines))
        for wheel in wheels:
            if not (staging / wheel.filename).exists():
                link_or_copy(cache / wheel.filename, staging / wheel.filename)
    (staging / ".inputs").write_text(inputs)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def resolve_all(
    pins: dict[str, str], tools: dict[str, str], torch_index: str | None
) -> tuple[list[Wheel], list[Wheel]]:
    """The runtime wheels (the project's requirements under the venv's pins) and the tools."""
    declared = [
        str(r)
        for r in map(Requirement, metadata.requires(PROJECT) or [])
        if not r.marker or r.marker.evaluate({"extra": ""})
    ]
    runtime = resolve(declared, pins, torch_index)
    if not torch_index:
        resolved = {w.name: w.version for w in runtime}
        if resolved != pins:
            raise WheelhouseError(
                "pip resolved other versions than the venv holds: "
                f"{sorted(set(resolved.items()) ^ set(pins.items()))}"
            )
    return runtime, resolve([f"{n}=={v}" for n, v in tools.items()], pins, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to lay out (replaced)")
    parser.add_argument(
        "--torch-index",
        default=os.environ.get("TORCH_INDEX") or None,
        help="extra index for torch, e.g. https://download.pytorch.org/whl/cpu (default: PyPI)",
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="per machine: wheels/ and locks/"
    )
    args = parser.parse_args(argv)
    try:
        pins = runtime_pins()
        tools = {"uv": installed_version("uv"), "hatchling": HATCHLING_VERSION}
        inputs = json.dumps(
            {"layout": LAYOUT, "pins": pins, "tools": tools, "torch_index": args.torch_index},
            sort_keys=True,
            indent=1,
        )
        stamp = args.out / ".inputs"
        if stamp.is_file() and stamp.read_text() == inputs:
            print(f"wheelhouse: {args.out} is up to date", file=sys.stderr)
            return 0
        # A resolution is kept per machine by its inputs: a fresh clone needs no index.
        key = hashlib.sha256(inputs.encode()).hexdigest()[:16]
        known = args.cache / "locks" / f"{key}.json"
        wheels = args.cache / "wheels"
        if known.is_file():
            sets = {k: [Wheel(**w) for w in v] for k, v in json.loads(known.read_text()).items()}
            runtime, build_tools = sets["requirements.txt"], sets["tools.txt"]
        else:
            runtime, build_tools = resolve_all(pins, tools, args.torch_index)
        fetch([*runtime, *build_tools], wheels)
        sets = {"requirements.txt": runtime, "tools.txt": build_tools}
        lay_out(args.out, wheels, sets, inputs)
        known.parent.mkdir(parents=True, exist_ok=True)
        known.write_text(json.dumps({k: [asdict(w) for w in v] for k, v in sets.items()}))
    except WheelhouseError as error:
        print(f"wheelhouse: {error}", file=sys.stderr)
        return 1
    torch = next(w for w in runtime if w.name == "torch")
    size = sum((args.out / w.filename).stat().st_size for w in runtime)
    print(
        f"wheelhouse: {args.out}: {len(runtime)} runtime wheels ({size / 1e9:.2f} GB, "
        f"torch {torch.version}), {len(build_tools)} build tools",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
