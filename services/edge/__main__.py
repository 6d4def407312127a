"""Runs the embedded REST edge: `python -m services.edge`."""

from services.edge.service import main

if __name__ == "__main__":
    main()
