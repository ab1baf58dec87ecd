"""Continuous integration in the daemon: new heads of CI branches, CI servers to trigger, built-in steps, artifacts."""
