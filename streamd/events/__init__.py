"""Event lifecycle sink: SQL log (SQLAlchemy + Alembic), MQTT publish, snapshots."""
