"""``python -m services.providers --worker NAME [--config F] [--port P]``."""

from __future__ import annotations

from services.common.server import main
from services.providers.server import WorkerSelection, add_arguments


def run() -> None:
    selection = WorkerSelection()
    main("providers", selection.build, selection.select, add_arguments)


if __name__ == "__main__":
    run()
