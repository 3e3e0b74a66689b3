"""Write the API's OpenAPI document to a file: the input of the console's typed client (``ui/``).

``python -m armillary.web.openapi_dump ui/openapi.json``. The app is built against a throw-away data
directory and a database file there that is never opened, so it runs on a build machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from armillary.api.app import create_app
from armillary.config import Settings


def document() -> dict:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), database_url=f"sqlite:///{data}/unused.db", secret_key="openapi-dump")
        return create_app(settings).openapi()


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else "ui/openapi.json")
    text = json.dumps(document(), indent=1, sort_keys=True) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
