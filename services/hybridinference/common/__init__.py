"""One place for what every service shares: settings, server bootstrap, logging, errors."""
