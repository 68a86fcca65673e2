"""``python -m services.logger [--config F] [--port P]``."""

from services.common.server import main
from services.logger.server import build, select

if __name__ == "__main__":
    main("logger", build, select)
