"""The web console: static files served by the gateway's ConsoleService (see assets.py)."""
