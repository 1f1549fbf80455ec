#!/usr/bin/env bash
# Here, before a device run: download into .whl/ the wheels the GPU machine's image lacks or has too old, for its
# Python 3.12 on x86_64 (its image has torch, torchvision, accelerate, tokenizers, typer, rich, numpy, pillow,
# matplotlib and psutil; transformers there is older than pyproject.toml's lowest, and PyAV is missing). The
# transformers version is the one this checkout's .venv tests. .whl/ is kept out of git by .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "transformers==$version" "av==15.1.0" "regex>=2025.10.22"
ls -l .whl
du -sh .whl   # with the working tree (about 6 MB) it must stay under the 64 MiB a device call carries
