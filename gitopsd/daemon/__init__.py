"""The daemon, by concern: main.py starts it (`gitopsd run`) and builds its parts; wiring.py, statedb.py, events.py,
lifecycle.py, serving.py and loop.py hold what it does with them; leadership.py is the leader and its standby.
"""
