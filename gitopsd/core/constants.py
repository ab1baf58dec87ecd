"""Git's constants that the core and the hook share. No imports: the hook imports this on every push."""

ZERO = "0" * 40  # the object id git gives a ref that does not exist (created or deleted in a push)
# Git's empty tree: `gitopsd init` starts a later environment's branch at a parentless commit with it,
# to wait for its first promotion (a branch at `main` would pass the rule once qa ran main, unpromoted).
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
