"""The command line: the only place quorum runs an event loop for you."""
