"""Reading a store document: JSON written by others, read as untrusted. A document that does not parse or
validate (truncated by a crash, or written by an older farm) is reported and treated as missing, so whatever
wrote it runs again instead of the farm failing on it; a name in it that would be a path elsewhere is a
tampered store, refused."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError

from mlc_farm.errors import DamagedDocumentError, UnsafeStoreName
from mlc_farm.names import UNSAFE
from mlc_farm.parallel import each

log = logging.getLogger(__name__)


class Documents(Protocol):
    """What reading a document needs of a store (every ArtifactStore has it)."""

    url: str
    readers: int

    def read_json(self, name: str) -> dict[str, Any] | None: ...


MAX_DOCUMENT = 32 * 2**20  # a store document (record, entry, signature) is kilobytes; far past this is hostile
MAX_DEPTH = 64  # nesting of any document the farm writes is under 10


def parse_document(where: str, raw: bytes | str) -> dict[str, Any]:
    """A store document's JSON, or DamagedDocumentError naming the object (truncated, not UTF-8, not an object,
    larger than MAX_DOCUMENT or nested deeper than MAX_DEPTH)."""
    return parse_bounded(where, raw, MAX_DOCUMENT, DamagedDocumentError)


def parse_bounded(where: str, raw: bytes | str, limit: int, error: type[Exception]) -> dict[str, Any]:
    """A JSON object read from others, within `limit` bytes and MAX_DEPTH levels; else `error` naming `where`."""
    if len(raw) > limit:
        raise error(f"{where} is damaged (over {limit // 2**20} MiB: no document the farm writes is that large)")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise error(f"{where} is damaged (nested deeper than {MAX_DEPTH} levels)") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise error(f"{where} is damaged ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{where} is damaged (a JSON {type(data).__name__}, not an object)")
    if _depth(data) > MAX_DEPTH:
        raise error(f"{where} is damaged (nested deeper than {MAX_DEPTH} levels)")
    return data


def _depth(doc: Any) -> int:
    """How deep a parsed document nests, walked without recursion (a deep one must not exhaust the stack)."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        node, level = todo.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        todo.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


M = TypeVar("M")


@dataclass(frozen=True)
class Tagged(Generic[M]):
    """A document that is one of several models told apart by a field (a build record, by its kind). Its errors
    name the member's tag before the field's path; the tag is no key of the document, so it is left out of the
    paths read here."""

    name: str
    adapter: TypeAdapter[M]

    def validate(self, data: Any) -> M:
        return self.adapter.validate_python(data)


Schema = type[M] | Tagged[M]
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _parts(schema: Schema[M]) -> tuple[str, TypeAdapter[M], int]:
    """The schema's name in messages, what validates it (made once per model), and how many leading parts of
    an error's path are not the document's (a tag)."""
    if isinstance(schema, Tagged):
        return schema.name, schema.adapter, 1
    if schema not in _ADAPTERS:
        _ADAPTERS[schema] = TypeAdapter(schema)
    return schema.__name__, _ADAPTERS[schema], 0


def read_document(store: Documents, name: str, model: Schema[M]) -> M | None:
    """A store document as `model`, or None when it is missing or damaged (reported, never raised). A name in
    it that breaks the path rule (mlc_farm/names.py) is not damage but a tampered store: UnsafeStoreName."""
    what, _, tag = _parts(model)
    try:
        data = store.read_json(name)
        return _tolerant(model, data, f"{store.url}/{name}") if data is not None else None
    except DamagedDocumentError as e:
        log.warning("%s; treated as missing, the next build rewrites it", e)
    except ValidationError as e:
        if unsafe := [p for p in e.errors() if p["type"] == UNSAFE]:
            where = ".".join(str(part) for part in unsafe[0]["loc"][tag:])
            raise UnsafeStoreName(
                f"{store.url}/{name}: {where}: {unsafe[0]['msg']}: refused, nothing was written (whoever can write "
                "to the store wrote a name that would be a path elsewhere; repair or delete the document)"
            ) from None
        log.warning(
            "%s/%s is not a %s this farm can read (%s); treated as missing, the next build rewrites it",
            store.url,
            name,
            what,
            first_problem(e, tag),
        )
    return None


def _tolerant(model: Schema[M], data: Any, where: str) -> M:
    """`data` as `model`; fields the model does not know (a newer farm wrote them) are dropped with a note, where
    the farm's own writes refuse them (mlc_farm/written.py)."""
    what, adapter, tag = _parts(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        unknown = [p["loc"][tag:] for p in e.errors() if p["type"] == "extra_forbidden"]
        if not unknown or len(unknown) < len(e.errors()):
            raise
    for loc in unknown:
        parent = data
        for part in loc[:-1]:
            parent = parent[part]
        parent.pop(loc[-1], None)
    fields = sorted({str(loc[-1]) for loc in unknown})
    if (what, *fields) not in _NOTED:  # once per kind of document and fields, not once per record
        _NOTED.add((what, *fields))
        log.warning("%s: fields this mlc-farm does not know (%s), ignored (a newer mlc-farm wrote them)", where,
                    ", ".join(fields))  # fmt: skip
    return adapter.validate_python(data)


_NOTED: set[tuple[str, ...]] = set()


def first_problem(e: ValidationError, tag: int = 0) -> str:
    """`field.path: what is wrong` of the first error of a document that does not validate (`tag`: leading parts
    of the path that are a union's tag, not a field)."""
    first = e.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'][tag:]) or 'document'}: {first['msg']}"


def read_all(store: Documents, names: Iterable[str], model: Schema[M]) -> Iterator[tuple[str, M]]:
    """(name, document) of every readable one of `names`, the store's `readers` at a time, in order."""
    names = list(names)
    for name, doc in zip(names, each(lambda n: read_document(store, n, model), names, store.readers), strict=True):
        if doc is not None:
            yield name, doc
