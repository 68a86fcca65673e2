"""``python -m hybridinference.router [--config F] [--port P]``"""

from hybridinference.common.server import main
from hybridinference.router.server import build, select

if __name__ == "__main__":
    main("router", build, select)
