"""The routing manager: resolves a model to endpoints, picks one by policy, relays the stream."""
