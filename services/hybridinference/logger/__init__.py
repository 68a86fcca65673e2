"""The request logger: stores one record per gateway request (PostgreSQL or embedded SQLite)."""
