"""Pure plotting: a result (and optionally the axes to draw on) in, a matplotlib ``Figure`` out,
built without pyplot and never written to disk (``report.files.save_figure`` does that)."""
