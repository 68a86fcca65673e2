"""``python -m hybridinference.providers --worker NAME [--config F] [--port P]``."""

from __future__ import annotations

from hybridinference.common.server import main
from hybridinference.providers.server import WorkerSelection, add_arguments


def run() -> None:
    selection = WorkerSelection()
    main("providers", selection.build, selection.select, add_arguments)


if __name__ == "__main__":
    run()
