"""streamd: live-video monitoring daemon (ingest → window → rules → events)."""

__version__ = "0.1.0"
