"""Stand-ins for outside services, for demos and tests: never wired into the service."""
