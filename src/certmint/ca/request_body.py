"""Reading a request body that a hostile client controls: bounded.

Shared by every HTTP surface of the CA (ACME, management, OCSP, remote VA
perspectives), so the one rule lives in one place.
"""

from __future__ import annotations

from starlette.requests import Request


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes: refused at
    once by its Content-Length, and otherwise (chunked) as soon as the bytes
    read pass the limit, instead of buffering whatever a client keeps
    sending."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
