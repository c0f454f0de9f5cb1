"""Jobs: each reads a whole config and runs something (train, evaluate, continual), with what
they share: build (config -> objects), the config checks, common helpers and the sweep summary.
Only the entry points import this package; the libraries below never do."""
