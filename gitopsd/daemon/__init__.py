"""The daemon: main.py wires the reconciler to its triggers, threads, signals and systemd;
leadership.py is the leader and its standby on one PostgreSQL database.
"""
