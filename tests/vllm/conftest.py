"""Real-vLLM tests run only in the vLLM virtualenv (``make test-vllm``).

In the default suite (no vllm importable) this folder is not collected: those runs stay fast.
Under ``make test-vllm`` (HI_VLLM_REQUIRED=1) a missing vllm is an error, never a silent pass.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("HI_VLLM_REQUIRED") == "1":
        raise RuntimeError(
            "HI_VLLM_REQUIRED=1 but vllm is not importable by this Python; "
            "run through `make test-vllm`, which installs it"
        )
    collect_ignore_glob = ["test_*.py"]
