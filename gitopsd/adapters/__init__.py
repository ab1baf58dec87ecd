"""The outside world: git, Ansible, the store, triggers, checks, notifications and systemd, each behind one module."""
