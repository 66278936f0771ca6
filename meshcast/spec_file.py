"""Read a YAML spec file into a pydantic model; every problem becomes one MeshcastError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from meshcast.errors import MeshcastError, from_validation_error

M = TypeVar("M", bound=BaseModel)

#: Largest spec file read (a model or profile YAML is a few kilobytes).
MAX_SPEC_BYTES = 16 << 20
#: Deepest nesting of mappings and lists a spec file may have (a profile nests about 6 deep).
MAX_DEPTH = 64
#: Most values (keys, scalars, lists, mappings) a spec file may expand to, aliases expanded
#: (a profile has a few hundred).
MAX_VALUES = 100_000


def read_text_file(path: str | Path, field: str, what: str = "file",
                   max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The UTF-8 text of ``path``; a missing file, a directory, a name too long, an unreadable
    or oversized file, or bytes that are not UTF-8 raise one MeshcastError naming ``field``."""
    path = Path(path)
    try:
        if path.is_dir():
            raise MeshcastError(f"{field}: {path} is a directory; give a {what} path")
        if not path.is_file():
            raise MeshcastError(f"{field}: no file at {path}")
        if path.stat().st_size > max_bytes:
            raise MeshcastError(f"{field}: {path} is larger than {max_bytes >> 20} MiB; is it "
                                f"the {what} meant?")
        data = path.read_bytes()
    except OSError as e:
        name = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
        raise MeshcastError(f"{field}: cannot read {name}: "
                            f"{e.strerror or os.strerror(e.errno or 0)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MeshcastError(f"{field}: {path} is not UTF-8 text (byte {e.start}: "
                            f"{data[e.start:e.start + 1]!r}); save it as UTF-8") from None


def _shape(node: yaml.Node) -> tuple[int, int, yaml.ScalarNode | None]:
    """(nesting depth, values, the first text that is not valid Unicode) of a composed YAML node
    as the loader would build it: an alias counts again wherever it is used. Iterative (no
    recursion limit to hit), and it stops once depth or values pass their bound, so a 'billion
    laughs' file (anchors of ten aliases of the anchor before) is refused after
    :data:`MAX_VALUES` steps instead of walked 10^9 times. Text with a lone surrogate (the
    escape ``"\\uDCE9"`` in a double-quoted string) could be read but never printed."""
    deepest, values, stack = 0, 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        values += 1
        deepest = max(deepest, d)
        if d > MAX_DEPTH or values > MAX_VALUES:
            break
        if isinstance(n, yaml.SequenceNode):
            stack.extend((c, d + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((v, d + 1) for pair in n.value for v in pair)
        elif isinstance(n, yaml.ScalarNode) and not _is_unicode(n.value):
            return deepest, values, n
    return deepest, values, None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_spec_file(path: str | Path, cls: type[M], field: str) -> M:
    """Parse ``path`` as YAML and validate it as ``cls``; ``field`` names it in error messages."""
    path = Path(path)
    text = read_text_file(path, field, "YAML")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        depth, values, bad_text = _shape(node) if node is not None else (0, 0, None)
        if bad_text is not None:
            raise MeshcastError(f"{field}: {path} line {bad_text.start_mark.line + 1}: "
                                f"{bad_text.value!r} is not valid Unicode text (a lone surrogate, "
                                "from an escape such as \\uDCE9); write the character itself")
        if depth > MAX_DEPTH:
            raise MeshcastError(f"{field}: {path} nests mappings or lists more than {MAX_DEPTH} "
                                "deep; a spec file is a flat mapping of a few levels")
        if values > MAX_VALUES:
            raise MeshcastError(f"{field}: {path} expands to more than {MAX_VALUES:,} values "
                                "(YAML aliases of aliases?); a spec file holds a few hundred: "
                                "write the values out instead of nesting anchors")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MeshcastError(f"{field}: {path} is not valid YAML: {' '.join(str(e).split())}") \
            from None
    except RecursionError:
        raise MeshcastError(f"{field}: {path} nests mappings or lists too deep to read; a spec "
                            "file is a flat mapping of a few levels") from None
    if not isinstance(raw, dict):
        raise MeshcastError(f"{field}: {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise from_validation_error(e, f"{field} {path.name}") from None
