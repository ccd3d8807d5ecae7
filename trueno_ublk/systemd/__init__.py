"""systemd: the config files, the generator of units, and how a daemon
meets its service manager."""
