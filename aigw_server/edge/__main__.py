"""Runs the embedded REST edge: `python -m aigw_server.edge`."""

from aigw_server.edge.service import main

if __name__ == "__main__":
    main()
