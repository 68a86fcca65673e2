"""python -m services.gateway [--config F] [--port P]"""

from services.common.server import main
from services.gateway.server import build

if __name__ == "__main__":
    main(
        "gateway",
        build,
        lambda s, _: (s.gateway.host, s.gateway.port, s.gateway.grace_period_s),
    )
