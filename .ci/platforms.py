"""CI check: the project's wheel resolves from binary wheels on every platform users run, without installing.

    python .ci/platforms.py dist/framefusion-*.whl

For each platform and Python version it asks uv's resolver (`uv pip compile --only-binary :all:
--python-platform ... --python-version ...`) for a complete set of binary wheels. uv rather than pip: pip
evaluates environment markers (decord's `platform_machine`) for the machine it runs on, not for `--platform`,
so it cannot check a platform-specific dependency. Exits 1 naming the package that has no wheel where a
platform fails, except where the failure is known and stated in the README (KNOWN_UNRESOLVABLE).
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PLATFORMS = {  # name: uv's --python-platform
    "Linux x86_64": "x86_64-manylinux_2_28",
    "Linux aarch64": "aarch64-manylinux_2_28",
    "macOS arm64": "aarch64-apple-darwin",
    "macOS x86_64": "x86_64-apple-darwin",
    "Windows amd64": "x86_64-pc-windows-msvc",
}
PYTHONS = ("3.10", "3.13")
# PyTorch has published no macOS x86_64 wheels since 2.2.2, and pyproject.toml asks for torch >= 2.7.
KNOWN_UNRESOLVABLE = {"macOS x86_64": "torch"}
NO_WHEELS = re.compile(r"Because (?:only )?(?:the following versions of )?([A-Za-z0-9_.-]+)[^\n]*? has no (?:wheels|usable wheels)")


def resolve(wheel: str, platform: str, python: str) -> subprocess.CompletedProcess:
    """uv's resolution of the wheel and its dependencies for one platform and Python, binary wheels only."""
    return subprocess.run([sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-header", "--only-binary",
                           ":all:", "--python-platform", platform, "--python-version", python, "-"],
                          input=wheel + "\n", capture_output=True, text=True)


def missing_package(stderr: str) -> str:
    """The package uv says has no wheel for the platform (or the first line of its error)."""
    found = NO_WHEELS.search(" ".join(stderr.split()).replace(" And because", "\nAnd because"))
    if found:
        return found.group(1)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def report(name: str, python: str, done: subprocess.CompletedProcess) -> bool:
    """Print one platform's line; True when it is a failure CI must show."""
    known = KNOWN_UNRESOLVABLE.get(name)
    if done.returncode == 0:
        pins = dict(line.split("==", 1) for line in done.stdout.splitlines() if "==" in line and line[0] != " ")
        decoders = "av + decord" if "decord" in pins else "av only (no decord wheel)"
        print(f"{name:<15} {python:<7} resolves: torch {pins.get('torch')}, transformers {pins.get('transformers')}, "
              f"{decoders}")
        if known:
            print(f"  {name} is listed as unresolvable but now resolves: update KNOWN_UNRESOLVABLE and the README")
        return known is not None
    package = missing_package(done.stderr)
    if known == package:
        print(f"{name:<15} {python:<7} does not resolve, as documented: no {package} wheel")
        return False
    print(f"{name:<15} {python:<7} FAILS: no binary wheel of {package}\n{done.stderr.strip()}")
    return True


def main() -> int:
    wheel = sys.argv[1]
    combos = [(name, platform, python) for name, platform in PLATFORMS.items() for python in PYTHONS]
    with ThreadPoolExecutor(len(combos)) as pool:  # the resolver waits on the index, not on the CPU
        results = list(pool.map(lambda combo: resolve(wheel, combo[1], combo[2]), combos))
    print(f"{'platform':<15} {'python':<7} result")
    failures = [report(name, python, done) for (name, _platform, python), done in zip(combos, results)]
    return 1 if any(failures) else 0


if __name__ == "__main__":
    sys.exit(main())
