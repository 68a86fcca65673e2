"""The public gateway: typed gRPC API and the OpenAI-compatible surface."""
