"""``python -m hybridinference.logger [--config F] [--port P]``."""

from hybridinference.common.server import main
from hybridinference.logger.server import build, select

if __name__ == "__main__":
    main("logger", build, select)
