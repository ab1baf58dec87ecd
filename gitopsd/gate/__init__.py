"""The hook path: what runs on every push (receive, policy, windows, the config snapshot, nudge, promotion); standard library only."""
