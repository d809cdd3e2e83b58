"""Per-camera frame analysis (detector, scene model) and the rolling token window."""
