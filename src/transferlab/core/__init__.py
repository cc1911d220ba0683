"""What every stage shares and that imports nothing heavy: names, the config schema and
loader, the stage runner (one-line errors, signals, locks) and atomic file writes."""
