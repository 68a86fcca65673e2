"""Renders the files derived from configuration and contracts (`python -m hybridinference.render`).

See __main__.py for the groups; the launcher imports the Envoy and Prometheus renderers.
"""
