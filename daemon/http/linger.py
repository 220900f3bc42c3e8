"""Answering before the body is read (401, 404, 405, 413, a broken body), without aiohttp
logging an error.

After a handler, aiohttp reads and drops what is left of the body ("lingering"); a body
that fails to decode (a corrupt gzip or deflate) then raises out of that loop, and it
logs the sender's garbage as an unhandled exception with a traceback. So the answer is
sent first, the rest is drained here, bounded, and a connection whose body is broken,
endless or too slow is closed instead of lingered on.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

# As aiohttp lingers: long enough for a client to read its answer, bounded.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1_048_576


async def answer_early(request: web.Request, response: web.Response) -> web.Response:
    """`response`, sent now; the unread rest of the body drained or the connection closed."""
    if request.content.is_eof():
        return response
    with contextlib.suppress(Exception):
        await response.prepare(request)
        await response.write_eof()
    drained = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while drained < LINGER_BYTES and (chunk := await request.content.readany()):
                drained += len(chunk)
    except Exception:  # a broken body, a timeout: the connection goes
        pass
    if not request.content.is_eof() or request.content.exception() is not None:
        # The answer is flushed before the transport closes.
        request.protocol.force_close()
    return response
