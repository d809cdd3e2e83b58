"""Several streamd instances sharing one PostgreSQL: camera leases, heartbeats, fair shares.

`leases` is the SQL (one lease row per camera, one heartbeat row per instance), `share` decides
how many cameras this instance should hold, `keeper` runs the renew/take/release loop, `runner`
starts and stops camera pipelines, and `assignment` is what the daemon wires: every camera
locally on SQLite, the leased share on PostgreSQL.
"""
