"""The `gitopsd` command line: main.py builds the parser and runs a command; each group of commands
(human.py: the human gates, ...) registers its own parsers. Imports are lazy: the hook path must stay fast.
"""
