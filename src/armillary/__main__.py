"""``python -m armillary``: the same as the ``armillary`` command."""

from armillary.cli.main import app

if __name__ == "__main__":
    app(prog_name="armillary")
