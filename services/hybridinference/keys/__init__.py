"""API keys: generation, HMAC hashing, and their table in the request-log database."""
