"""`make up`: runs the whole mesh locally (services, then Envoy) and stops it in drain order."""
