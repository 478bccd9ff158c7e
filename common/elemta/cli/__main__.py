"""``python -m elemta.cli``: the ``elemta`` command, for when the script is not on PATH."""

from .main import main

if __name__ == "__main__":
    main()
