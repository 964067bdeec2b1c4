"""Build the sdist and the wheel, check their metadata (twine --strict, SPDX
license, project URLs, authors) and that both ship LICENSE.

Run by ``tox -e pkg``: python .ci/check_dist.py OUTDIR
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1])
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), "."], check=True)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == len(wheels) == 1, (sdists, wheels)
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(sdists[0]), str(wheels[0])], check=True)
    with tarfile.open(sdists[0]) as sdist:
        in_sdist = {Path(n).name for n in sdist.getnames()}
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    problems = []
    if "LICENSE" not in in_sdist:
        problems.append("LICENSE missing from the sdist")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("LICENSE missing from the wheel")
    if "nsworkers/py.typed" not in names:
        problems.append("py.typed missing from the wheel")
    if "License-Expression: MIT" not in metadata.splitlines():
        problems.append("no SPDX License-Expression: MIT in the wheel's METADATA")
    if not any(line.startswith("Project-URL: Homepage, ") for line in metadata.splitlines()):
        problems.append("no Project-URL in the wheel's METADATA")
    if not any(line.startswith("Author") for line in metadata.splitlines()):
        problems.append("no Author in the wheel's METADATA")
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    print(f"check_dist: {sdists[0].name} and {wheels[0].name}: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
