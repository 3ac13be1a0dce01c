"""The record: everything that talks to MLflow (the store, runs, provenance, orphans, redaction)."""
