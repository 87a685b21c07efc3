"""``python -m procflow``: the command line (see ``procflow.cli``)."""

from procflow.cli import main

if __name__ == "__main__":  # worker processes import this module too: do nothing there
    main()
