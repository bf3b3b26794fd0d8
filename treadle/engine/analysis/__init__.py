"""Offline analysis of a run directory, apart from the runtime engine: metrics from trace.jsonl and
summary.json (`metrics`) and the Chrome/Perfetto export (`chrome_trace`)."""
