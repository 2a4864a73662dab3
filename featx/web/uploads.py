"""uploads: a request's photos, read into memory under limits and decoded in worker threads.

Nothing is written to disk: the body is streamed into memory (stopping with 413 as soon as it
passes ``max_bytes``), a multipart body is parsed with python-multipart's streaming parser into
in-memory buffers (not Starlette's spooled temporary files), and decoding goes through
:func:`featx.decode.decode_bytes`, the one guarded decode (bomb guard, modes, EXIF).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from featx.decode import DecodeError, DecodeSettings, decode_bytes
from featx.web.app import WebError

RAW_TYPES = ("image/", "application/octet-stream")
MAX_HEADER_BYTES = 8192


@dataclass(frozen=True)
class UploadLimits:
    """What one request may send: ``max_bytes`` in all (413), ``max_files`` parts (413)."""

    max_bytes: int = 20 * 1024 * 1024
    max_files: int = 64
    types: tuple[str, ...] = RAW_TYPES  # accepted content types (prefixes), body or part

    def accepts(self, content_type: str) -> bool:
        ct = content_type.split(";")[0].strip().lower()
        return any(ct.startswith(t) for t in self.types)


@dataclass
class Upload:
    """One uploaded file, in memory."""

    name: str
    content_type: str
    data: bytes = b""


async def read_uploads(request: Request, limits: UploadLimits = UploadLimits()) -> list[Upload]:
    """The photos of a request: multipart files (field names ignored), or the raw body as one
    photo (its name from an ``X-Filename`` header, else ``upload``). Raises :class:`WebError`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_big(limits)
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    kind = kind.decode("latin-1").lower()
    if kind == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise WebError(400, "multipart body without a boundary")
        uploads = await _multipart(request, boundary, limits)
    elif limits.accepts(kind):
        name = request.headers.get("x-filename", "upload")[:200] or "upload"
        uploads = [Upload(name, kind, b"".join([c async for c in _body(request, limits)]))]
    else:
        raise WebError(415, f"unsupported content type {kind or 'none'!r}: send photos as "
                       f"multipart/form-data files, or one as an image/* body")
    if not uploads:
        raise WebError(400, "no photo in the request: send one or more files")
    return uploads


async def _body(request: Request, limits: UploadLimits):
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limits.max_bytes:
                raise _too_big(limits)
            yield chunk
    except ClientDisconnect:
        raise WebError(400, "the client disconnected mid-upload") from None


def _too_big(limits: UploadLimits) -> WebError:
    return WebError(413, f"upload too large: more than {limits.max_bytes / 2**20:g} MB")


@dataclass
class _Parts:
    limits: UploadLimits
    uploads: list[Upload] = field(default_factory=list)
    header: list[bytes] = field(default_factory=lambda: [b"", b""])
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    count: int = 0
    error: WebError | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.field,
                "on_header_value": self.value, "on_header_end": self.header_end,
                "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.count += 1
        if self.count > self.limits.max_files:
            raise _Stop(WebError(413, f"too many parts: at most {self.limits.max_files} files a "
                                      f"request"))
        self.headers, self.chunks = {}, []

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header[0] += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header[1] += data[start:end]

    def header_end(self) -> None:
        name, value = (h.decode("latin-1") for h in self.header)
        self.headers[name.strip().lower()] = value.strip()
        self.header = [b"", b""]

    def data(self, data: bytes, start: int, end: int) -> None:
        self.chunks.append(bytes(data[start:end]))

    def end(self) -> None:
        _, opts = parse_options_header(self.headers.get("content-disposition", ""))
        filename = opts.get(b"filename")
        if filename is None:  # a plain form field, not a file: ignored
            return
        ct = self.headers.get("content-type", "application/octet-stream")
        name = filename.decode("utf-8", "replace")[:200] or f"file{len(self.uploads) + 1}"
        if not self.limits.accepts(ct):
            raise _Stop(WebError(415, f"{name}: unsupported content type {ct!r}; send photos "
                                      f"(image/*)"))
        self.uploads.append(Upload(name, ct.split(";")[0].strip().lower(), b"".join(self.chunks)))


class _Stop(Exception):
    def __init__(self, error: WebError) -> None:
        self.error = error


async def _multipart(request: Request, boundary: bytes, limits: UploadLimits) -> list[Upload]:
    parts = _Parts(limits)
    try:
        parser = MultipartParser(boundary, parts.callbacks(), max_header_size=MAX_HEADER_BYTES)
    except Exception as e:
        raise WebError(400, f"malformed multipart body: {e}") from None
    try:
        async for chunk in _body(request, limits):
            parser.write(chunk)
        parser.finalize()
    except _Stop as stop:
        raise stop.error from None
    except (MultipartParseError, ValueError) as e:
        raise WebError(400, f"malformed multipart body: {e}") from None
    return parts.uploads


async def decode_uploads(uploads: list[Upload], settings: DecodeSettings,
                         limiter: anyio.CapacityLimiter | None = None
                         ) -> list[np.ndarray | DecodeError]:
    """Decode each upload in a worker thread (never on the event loop): an RGB uint8 array at
    ``settings.size``, or the :class:`DecodeError` that says why not."""
    results: list[np.ndarray | DecodeError] = [None] * len(uploads)  # type: ignore[list-item]

    async def one(i: int, data: bytes) -> None:
        results[i] = await anyio.to_thread.run_sync(_decode, data, settings, limiter=limiter)

    async with anyio.create_task_group() as tg:
        for i, u in enumerate(uploads):
            tg.start_soon(one, i, u.data)
    return results


def _decode(data: bytes, settings: DecodeSettings) -> np.ndarray | DecodeError:
    try:
        return decode_bytes(data, settings)
    except DecodeError as e:
        return e
