"""The ``hybridinference`` command line: chat, status, logs and models against a running mesh."""
