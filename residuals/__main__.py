"""``python -m residuals``: the same as the ``residuals`` command."""

from residuals.cli import main

if __name__ == "__main__":
    main()
