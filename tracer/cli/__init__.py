"""The command line: the `tcpoom` entry point, the click group, one module per verb (commands/)."""
