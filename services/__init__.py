"""The services of the aigw mesh, one package each."""
