"""Serves a fake upstream in its own process (benchmarks keep its CPU apart from the adapter's).

python -m support.fakes.serve openai|gemini   → prints the base URL, serves until stdin closes
"""

from __future__ import annotations

import sys

from support.fakes.gemini_api import GeminiFake
from support.fakes.openai_api import OpenAIFake


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "openai"
    if kind == "openai":
        openai_fake = OpenAIFake().start()
        print(openai_fake.base_url, flush=True)
        stop = openai_fake.stop
    elif kind == "gemini":
        gemini_fake = GeminiFake().start()
        print(gemini_fake.url, flush=True)
        stop = gemini_fake.stop
    else:
        raise SystemExit(f"unknown fake {kind!r}; use openai or gemini")
    sys.stdin.read()
    stop()


if __name__ == "__main__":
    main()
