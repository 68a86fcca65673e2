"""Per-key quotas: requests and tokens per minute, requests in flight, daily and monthly spend."""
