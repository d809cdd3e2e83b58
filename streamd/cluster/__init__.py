"""Several streamd instances sharing one PostgreSQL: camera leases, heartbeats, fair shares.

`leases` is the SQL (one lease row per camera, one heartbeat row per instance), `share` decides
how many cameras this instance should hold, `keeper` runs the renew/take/release loop and starts
and stops cameras through callbacks, `local` is the single-instance stand-in (SQLite).
"""
