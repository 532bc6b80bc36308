"""A running session: events from the kernel, to a trace file and to totals against TcpExt."""
