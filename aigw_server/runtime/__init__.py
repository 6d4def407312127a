"""What every service shares: typed config, server bootstrap, interceptors and the error boundary, auth and
mesh identity, logs, the data dir."""
