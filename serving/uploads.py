"""Reading one uploaded file from a multipart/form-data request, cheaply.

Parsing a small upload with Starlette's general multipart parser (python-multipart, a
byte-level state machine with a callback per event) cost more CPU than running the model. A
body as browsers, curl, requests and httpx send it is split on its boundary here in a few
microseconds; anything this fast path does not recognise (transport padding, bare LF line
ends, quoted-printable, a missing part header end) is handed to Starlette's parser, so no
valid request is refused for being unusual.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

# Parts one upload may have: the image and a few form fields. Starlette's parser is held to the
# same (max_files + max_fields); 200,000 tiny parts were accepted before, each a Python object.
MAX_FILES = 8
MAX_FIELDS = 32
MAX_PARTS = MAX_FILES + MAX_FIELDS


class UploadError(ValueError):
    """The request does not carry the expected file: the message says what to send instead."""


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str


@dataclass(frozen=True)
class Part:
    name: str
    is_file: bool
    content_type: str
    content: bytes


def split_parts(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of a plain multipart/form-data body; None for anything unusual.

    Raises:
        UploadError: the body has more than MAX_PARTS parts (counted before any is split off).
    """
    delimiter = b"\r\n--" + boundary
    if (count := body.count(delimiter) + body.startswith(delimiter[2:]) - 1) > MAX_PARTS:
        raise UploadError(f"the multipart body has {count:,} parts; send the image with at most {MAX_PARTS} parts")
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        return None
    parts = []
    for piece in pieces[1:-1]:
        if not piece.startswith(b"\r\n"):
            return None
        head, separator, content = piece[2:].partition(b"\r\n\r\n")
        if not separator:
            return None
        headers = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                return None
            headers[name.strip().lower()] = value.strip()
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            return None
        parts.append(
            Part(
                name=options[b"name"].decode("latin-1"),
                is_file=any(key.startswith(b"filename") for key in options),  # filename= or filename*=
                content_type=headers.get(b"content-type", b"").decode("latin-1"),
                content=content,
            )
        )
    return parts


async def read_file_field(request: Request, field: str) -> Upload:
    """The file uploaded in the multipart field ``field``.

    Raises:
        UploadError: the body is not multipart/form-data, is malformed, or has no such file.
    """
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        raise UploadError(f"send the image as multipart/form-data with the file field '{field}'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError("the multipart body has no boundary in its Content-Type header")
    body = await request.body()  # kept by the request, so Starlette's parser can read it again
    parts = split_parts(body, boundary)
    if parts is None:
        found = await _parse_with_starlette(request, field)
    else:
        found = next((Upload(p.content, p.content_type) for p in parts if p.name == field and p.is_file), None)
    if found is None:
        raise UploadError(f"send the image as the multipart file field '{field}'")
    return found


async def _parse_with_starlette(request: Request, field: str) -> Upload | None:
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)
    except (MultiPartException, HTTPException) as error:
        detail = getattr(error, "detail", None) or getattr(error, "message", None) or str(error)
        raise UploadError(f"the multipart body cannot be read ({detail})") from error
    try:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            return None
        return Upload(await upload.read(), upload.content_type or "")
    finally:
        await form.close()
