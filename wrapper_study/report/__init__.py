"""The report layer: tables (CSV, markdown), figures, and claims with verdicts."""
