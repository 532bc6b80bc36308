"""The records: event layout, the trace file, playback, and the aggregation every view shares."""
