"""The server: sockets, shares, configuration and the command line."""
