"""python -m hybridinference.gateway [--config F] [--port P]"""

from hybridinference.common.server import main
from hybridinference.gateway.server import build

if __name__ == "__main__":
    main(
        "gateway",
        build,
        lambda s, _: (s.gateway.host, s.gateway.port, s.gateway.grace_period_s),
        max_receive_bytes=lambda s: s.gateway.receive_limit_bytes,
    )
