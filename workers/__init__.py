"""Worker processes that persist streamed writes and run summarizers."""
