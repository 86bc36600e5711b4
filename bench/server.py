"""The benchmark server: the real app, plus a bare Litestar route in the same process.

``GET /bench/bare`` returns the bytes of the file named by ``BENCH_BARE_FILE`` (read once):
the baseline that ``bench_list.py`` compares ``GET /v1/memories`` with.
"""

from __future__ import annotations

import os

import anyio
from litestar import Response, get

from app.config import Settings
from app.main import create_app
from app.serving import configure_logging, serve_app

_cache: dict[str, bytes] = {}


@get("/bench/bare")
async def bare() -> Response[bytes]:
    body = _cache.get("body")
    if body is None:
        body = _cache["body"] = await anyio.Path(os.environ["BENCH_BARE_FILE"]).read_bytes()
    return Response(body, media_type="application/json")


def main() -> None:
    settings = Settings.from_env()
    configure_logging("warning")
    app = create_app(settings)
    app.register(bare)
    serve_app(app, host="127.0.0.1", port=settings.port, log_level="warning")  # as `omi-backend serve`


if __name__ == "__main__":
    main()
