"""Files: uploads (multipart, ``attach://``, file ids, URLs), ``getFile`` and image sizes."""

from __future__ import annotations

import mimetypes
import secrets
import struct
from typing import Any, Literal

import aiohttp

from bot.sandbox.core.errors import bad
from bot.sandbox.core.host import Host
from bot.sandbox.core.params import Params
from bot.sandbox.core.routing import api
from bot.sandbox.core.state import SimBot, StoredFile

__all__ = ["MAX_DOWNLOAD_BYTES", "image_size", "input_file", "store_file"]

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG, GIF or WebP image, ``None`` if unrecognised."""
    size: tuple[int, int] | None = None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        size = struct.unpack(">II", data[16:24])
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        size = struct.unpack("<HH", data[6:10])
    elif data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        b = data[21:25]
        width = 1 + (((b[1] & 0x3F) << 8) | b[0])
        height = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return width, height
    return None


def store_file(
    server: Host,
    data: bytes,
    filename: str | None,
    mime_type: str | None,
    kind: Literal["document", "photo", "video"],
) -> StoredFile:
    if not data:
        raise bad("file must be non-empty")
    width = height = 0
    if kind == "photo":
        size = image_size(data)
        if size is None:
            raise bad("IMAGE_PROCESS_FAILED")
        width, height = size
    if not mime_type or mime_type == "application/octet-stream":
        mime_type = mimetypes.guess_type(filename or "")[0] or "application/octet-stream"
    number = next(server.state.counter)
    suffix = ""
    if filename and "." in filename:
        suffix = "." + filename.rsplit(".", 1)[1]
    if kind == "photo":
        path = f"photos/file_{number}{suffix or '.jpg'}"
        prefix = "AgACAgIAAxkBAAI"
    elif kind == "video":
        path = f"videos/file_{number}{suffix or '.mp4'}"
        prefix = "BAACAgIAAxkBAAI"
    else:
        path = f"documents/file_{number}{suffix}"
        prefix = "BQACAgIAAxkBAAI"
    stored = StoredFile(
        file_id=prefix + secrets.token_urlsafe(30),
        file_unique_id="AgAD" + secrets.token_urlsafe(9),
        kind=kind,
        data=data,
        file_name=filename if kind != "photo" else None,
        mime_type=mime_type if kind != "photo" else None,
        file_path=path,
        width=width,
        height=height,
    )
    server.state.files[stored.file_id] = stored
    server.state.files_by_path[path] = stored
    return stored


async def input_file(
    server: Host, params: Params, name: Literal["document", "photo", "video"]
) -> StoredFile:
    """Resolve an InputFile parameter: an upload, ``attach://``, a file_id or a URL."""
    value = params.raw.get(name)
    upload = params.files.get(name)
    if upload is None and isinstance(value, str) and value.startswith("attach://"):
        upload = params.files.get(value.removeprefix("attach://"))
    if upload is not None:
        return store_file(server, upload.data, upload.filename, upload.content_type, name)
    if isinstance(value, str) and value and not value.startswith("attach://"):
        if value.startswith(("http://", "https://")):
            data = await download(server, value)
            filename = value.rsplit("/", 1)[-1].split("?", 1)[0] or None
            return store_file(server, data, filename, None, name)
        stored = server.state.files.get(value)
        if stored is None:
            raise bad("wrong file identifier/HTTP URL specified")
        if stored.kind != name:
            raise bad(f"can't use file of type {stored.kind.title()} as {name.title()}")
        return stored
    raise bad(f"there is no {name} in the request")


async def download(server: Host, url: str) -> bytes:
    try:
        async with server.http_client().get(
            url, timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            if response.status != 200:
                raise bad("failed to get HTTP URL content")
            return await response.read()
    except (aiohttp.ClientError, TimeoutError):
        raise bad("failed to get HTTP URL content") from None


@api("getFile")
async def get_file(server: Host, bot: SimBot, params: Params) -> dict[str, Any]:
    stored = server.state.files.get(params.string("file_id", required=True) or "")
    if stored is None:
        raise bad("invalid file_id")
    if stored.size > MAX_DOWNLOAD_BYTES:
        raise bad("file is too big")
    return stored.file_dict()
