"""``python -m services.router [--config F] [--port P]``"""

from services.common.server import main
from services.router.server import build, select

if __name__ == "__main__":
    main("router", build, select)
