"""``python -m stateless13``: the command line, which lives with the adapters it runs
(``stateless13.transports.cli``).  No module of the core imports this entry point."""

from stateless13.transports.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
