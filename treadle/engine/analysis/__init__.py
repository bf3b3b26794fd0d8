"""Offline analysis of a run directory, apart from the runtime engine: metrics from the trace and
summary.json (`metrics.measure_run`, typed as `metrics_record.RunMetrics`, its parts in `records`; summary.json
read as a `RunSummary` by `run_dir.load_summary`; summary.json's part of the metrics in `summary`),
each worker's share of a run on several processes (`per_worker.measure_workers`), and the Chrome/Perfetto
export (`chrome_trace.export_chrome`).

It reads the engine's trace format (treadle.engine.trace_reader) and imports nothing of the running
engine (scheduler, run, controller, tracker, context): the runtime imports it, never the reverse.
"""
