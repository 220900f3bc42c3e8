"""Manifest files as `remedyd scan` reads them: files and directories (*.yaml, *.yml,
*.json), `-` for stdin, multi-document YAML, `kind: List` and any `*List` with `items`.

Each object keeps its file and the 1-based line its document (or List item) starts on,
from the composed YAML nodes' start marks, so a finding points at the object. A document
that cannot be read is a Problem naming the file and line; the others are still read.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from daemon.core.rules import SECURITY_KINDS

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
STDIN_NAME = "<stdin>"
# libyaml's parser when the wheel has it (it does on every platform with a wheel); the
# constructor is Python either way, the parser is what the C one makes 5-10x faster.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_TAGS_KEPT = 50_000


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, remembering the tag of each plain scalar it resolved: manifests
    repeat the same keys and values (`name`, `image`, `IfNotPresent`) thousands of times,
    and resolving tries up to a dozen regular expressions in Python on each."""

    _plain: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = self._plain.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._plain) >= _PLAIN_TAGS_KEPT:
                    self._plain.clear()
                self._plain[value] = tag
            return tag
        return super().resolve(kind, value, implicit)
# Where a document starts: `---` at the start of a line (alone or before content), and
# where one ends (`...`). Used only to re-read a stream document by document after a
# syntax error, so that one bad document costs only itself.
_DOCUMENT_START = re.compile(r"^---(?:[ \t]|$)")
_DOCUMENT_END = re.compile(r"^\.\.\.[ \t]*$")
_DOCUMENT_START_LINE = re.compile(r"^---(?:[ \t]|$)", re.MULTILINE)

# Built-in API groups: a kind of these groups that is neither checked nor listed below is
# a typo or a kind of a version remedyd does not know, worth an error; a kind of any
# other group is a custom resource, which no check reads.
_BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "policy",
    "autoscaling", "storage.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "scheduling.k8s.io",
    "node.k8s.io", "certificates.k8s.io", "flowcontrol.apiserver.k8s.io",
    "apiregistration.k8s.io", "resource.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "kustomize.config.k8s.io"})
# Built-in kinds no check reads: skipped, counted, not an error.
_UNCHECKED_KINDS = frozenset({
    "Service", "ConfigMap", "Secret", "Endpoints", "EndpointSlice", "Ingress",
    "IngressClass", "PersistentVolume", "PersistentVolumeClaim", "StorageClass",
    "PodDisruptionBudget", "HorizontalPodAutoscaler", "LimitRange", "ResourceQuota",
    "PriorityClass", "RuntimeClass", "Lease", "Event", "Node", "PodTemplate",
    "CustomResourceDefinition", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "APIService", "CSIDriver", "CSINode",
    "VolumeAttachment", "CertificateSigningRequest", "FlowSchema",
    "PriorityLevelConfiguration", "ControllerRevision", "Binding", "ComponentStatus",
    "ReplicationController", "ServiceCIDR", "IPAddress", "Kustomization", "Component"})
# The kinds the checks read, as manifests spell them (`container` is Docker's).
CHECKED_KINDS = frozenset(kind for kind in SECURITY_KINDS if kind != "container")


@dataclass(frozen=True, slots=True)
class Manifest:
    obj: dict[str, Any]
    file: str
    line: int

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind") or "")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else (
            f"{self.file}: {self.message}")


@dataclass(slots=True)
class Loaded:
    objects: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Objects of kinds no check reads (Service, ConfigMap, custom resources), by kind.
    unchecked: Counter[str] = field(default_factory=Counter)
    files: int = 0
    taken: int = 0
    # Set: each object is handed to it as it is read instead of kept in `objects`, so a
    # caller keeping only part of it (its view) never holds every raw object at once.
    sink: Callable[[Manifest], None] | None = None

    @property
    def read_any(self) -> bool:
        """Whether anything could be read: an object, or a document of an unchecked kind."""
        return bool(self.taken or self.unchecked)

    def take(self, manifest: Manifest) -> None:
        self.taken += 1
        if self.sink is not None:
            self.sink(manifest)
        else:
            self.objects.append(manifest)


@dataclass(frozen=True, slots=True)
class Source:
    """A file, stdin's text, or a piece of either, to read: `base` lines come before it
    in its file, so its objects keep the file's line numbers."""

    name: str
    path: Path | None = None
    text: str | None = None
    base: int = 0
    json_file: bool = False
    size: int = 0


def load_manifests(paths: Sequence[str], stdin: TextIO | None = None,
                   sink: Callable[[Manifest], None] | None = None) -> Loaded:
    """Every object in `paths`, in path order, then file order within a directory (kept,
    or handed to `sink` as read)."""
    loaded = Loaded(sink=sink)
    for source in sources(paths, stdin, loaded):
        read_source(source, loaded)
    return loaded


def sources(paths: Sequence[str], stdin: TextIO | None, into: Loaded) -> list[Source]:
    """What `paths` name, in order: files found in directories, stdin's text for `-`; a
    path that is not there is a problem in `into`."""
    found: list[Source] = []
    for entry in paths:
        if entry == STDIN:
            text = stdin.read() if stdin is not None else ""
            found.append(Source(STDIN_NAME, text=text, size=len(text)))
            continue
        for path in _files(entry, into):
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            found.append(Source(str(path), path=path, json_file=path.suffix == ".json",
                                size=size))
    return found


def read_source(source: Source, into: Loaded) -> None:
    text = source.text if source.text is not None else _read(source, into)
    if text is None:
        return
    if source.base == 0:
        into.files += 1
    _load_text(text, source.name, json_file=source.json_file, into=into, base=source.base)


def _read(source: Source, into: Loaded) -> str | None:
    assert source.path is not None
    try:
        return source.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        into.problems.append(Problem(source.name, 0, f"cannot read: {exc}"))
        return None


def split(source: Source, parts: int) -> list[Source]:
    """`source` in up to `parts` pieces of about the same size, cut where a document
    starts (`---` at the start of a line is a document marker wherever it is, even in
    a block scalar, so a cut never falls inside a document)."""
    if parts <= 1 or source.json_file:
        return [source]
    text = source.text if source.text is not None else _read(source, Loaded())
    if text is None:
        return [source]  # read again, and reported, as a whole
    cuts = [0]
    for index in range(1, parts):
        found = _DOCUMENT_START_LINE.search(text, len(text) * index // parts)
        if found is not None and found.start() > cuts[-1]:
            cuts.append(found.start())
    pieces = []
    line = source.base
    for lo, hi in zip(cuts, [*cuts[1:], len(text)], strict=True):
        piece = text[lo:hi]
        pieces.append(Source(source.name, text=piece, base=line,
                             json_file=source.json_file, size=len(piece)))
        line += piece.count("\n")
    return pieces


def _files(entry: str, loaded: Loaded) -> Iterator[Path]:
    path = Path(entry)
    if path.is_dir():
        found: list[Path] = []
        for root, dirs, names in os.walk(path):
            # Hidden directories (.git, editors' state) hold no manifests to apply.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root, name) for name in sorted(names)
                         if name.endswith(SUFFIXES) and not name.startswith("."))
        if not found:
            loaded.problems.append(Problem(entry, 0, "no manifest files (*.yaml, *.yml, "
                                                     "*.json) in this directory"))
        yield from found
    elif path.exists():
        yield path
    else:
        loaded.problems.append(Problem(entry, 0, "no such file or directory"))


def _load_text(text: str, file: str, *, json_file: bool, into: Loaded, base: int = 0) -> None:
    last = 0  # the line (in `text`) of the last document taken
    try:
        for data, line, items in _compose_all(text):
            _take(data, _shifted(items, base), file, base + line, into)
            last = line
    except yaml.YAMLError:
        if json_file and not last:
            # Valid JSON that YAML 1.1 refuses (rare escapes): no line numbers, but read.
            try:
                data = json.loads(text)
            except ValueError as exc:
                into.problems.append(Problem(file, getattr(exc, "lineno", 0),
                                             f"not valid JSON: {exc}"))
                return
            _take(data, None, file, base + 1, into)
            return
        _load_by_document(text, file, into, after=last, base=base)


def _shifted(lines: list[int] | None, by: int) -> list[int] | None:
    return [by + n for n in lines] if lines and by else lines


def _load_by_document(text: str, file: str, into: Loaded, after: int, base: int) -> None:
    """After a syntax error: each document past line `after` (those before it were
    taken) on its own, the bad ones reported and skipped."""
    for offset, segment in _segments(text):
        if offset + segment.count("\n") < after:
            continue
        try:
            documents = list(_compose_all(segment))
        except yaml.YAMLError as exc:
            into.problems.append(Problem(file, base + offset + _first_content_line(segment),
                                         f"YAML error: {_describe(exc, base + offset)}; "
                                         "document skipped"))
            continue
        for data, line, items in documents:
            if offset + line <= after:
                continue
            _take(data, _shifted(items, base + offset), file, base + offset + line, into)


def _first_content_line(segment: str) -> int:
    """The 1-based line of a document's first content, past its marker and comments."""
    for number, line in enumerate(segment.splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#") and not _DOCUMENT_START.match(line):
            return number
    return 1


def _describe(exc: yaml.YAMLError, offset: int) -> str:
    """libyaml's words and where, in the file's line numbers."""
    parts = []
    for what, mark in ((getattr(exc, "context", None), getattr(exc, "context_mark", None)),
                       (getattr(exc, "problem", None), getattr(exc, "problem_mark", None))):
        if what:
            parts.append(f"{what} (line {offset + mark.line + 1})" if mark else str(what))
    return ": ".join(parts) or str(exc).splitlines()[0]


def _segments(text: str) -> Iterator[tuple[int, str]]:
    """(line offset, text) of each document of a stream, split at its markers."""
    lines = text.splitlines(keepends=True)
    start = 0
    for number, line in enumerate(lines):
        if _DOCUMENT_START.match(line) and number > start:
            yield start, "".join(lines[start:number])
            start = number
        elif _DOCUMENT_END.match(line):
            yield start, "".join(lines[start:number])
            start = number + 1
    if start < len(lines):
        yield start, "".join(lines[start:])


def _compose_all(text: str) -> Iterator[tuple[Any, int, list[int] | None]]:
    """(data, 1-based line, the lines of its `items` if any) of each non-empty document.

    The nodes are dropped as soon as their lines are read: kept, 10,000 documents' nodes
    are millions of objects the cyclic GC walks again and again (3x the load time)."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield _construct(loader, node), node.start_mark.line + 1, _item_lines(node)
    finally:
        loader.dispose()


def _take(data: Any, item_lines: list[int] | None, file: str, line: int,
          into: Loaded) -> None:
    if data is None:
        return  # an empty document (a trailing `---`), as kubectl takes it
    if not isinstance(data, dict):
        into.problems.append(Problem(file, line, f"not an object but a "
                                                 f"{_yaml_type(data)}; skipped"))
        return
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str):
        into.problems.append(Problem(file, line, _not_an_object(data)))
        return
    items = data.get("items")
    if kind.endswith("List") and isinstance(items, list):
        for index, item in enumerate(items):
            item_line = item_lines[index] if item_lines and index < len(item_lines) else line
            # An item of a List may leave kind/apiVersion out only where the List says
            # them (a typed PodList); kubectl's List has them on every item.
            if isinstance(item, dict) and "kind" not in item and kind != "List":
                item = {"kind": kind[:-len("List")], "apiVersion": api_version, **item}
            _take(item, None, file, item_line, into)
        return
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    if kind.lower() in CHECKED_KINDS and group in _BUILTIN_GROUPS:
        metadata = data.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("name"):
            into.problems.append(Problem(file, line, f"{kind} without metadata.name; "
                                                     "skipped"))
            return
        into.take(Manifest(data, file, line))
    elif group not in _BUILTIN_GROUPS or kind in _UNCHECKED_KINDS:
        into.unchecked[kind] += 1
    else:
        into.problems.append(Problem(file, line, f"unknown kind {kind!r} of "
                                                 f"{api_version!r}; skipped"))


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _construct(loader: Any, node: yaml.Node) -> Any:
    """The document's data, as SafeLoader constructs it but in a third of the time: a
    manifest is mappings, sequences and strings, built here directly; other scalars go
    through the loader's own constructors, and what this walk does not handle (merge
    keys, a structure that contains itself) through the loader's whole construction."""
    try:
        return _build(loader, loader.yaml_constructors, node)
    except (_Unusual, KeyError, RecursionError):
        return loader.construct_document(node)


# A module function, not a closure: a recursive closure is a reference cycle, and with
# the GC off while loading each one kept its loader (and its file's text) alive.
def _build(loader: Any, constructors: dict[str, Any], node: yaml.Node) -> Any:
    if type(node) is yaml.ScalarNode:
        if node.tag == _STR:
            return node.value
        return constructors[node.tag](loader, node)
    if type(node) is yaml.MappingNode:
        out = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                raise _Unusual
            built = _build(loader, constructors, key)
            if not isinstance(built, Hashable):
                raise _Unusual  # the loader names the problem
            out[built] = _build(loader, constructors, value)
        return out
    if type(node) is yaml.SequenceNode:
        return [_build(loader, constructors, item) for item in node.value]
    raise _Unusual


class _Unusual(Exception):
    """A node the direct construction leaves to the loader."""


def _item_lines(node: yaml.Node) -> list[int] | None:
    """The 1-based lines where the items of a document's `items` sequence start."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "items" and isinstance(
                value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return None


def _not_an_object(data: dict[str, Any]) -> str:
    hint = ""
    if "services" in data:
        hint = "; a Compose file: scan the running containers with --docker"
    elif "rules" in data:
        hint = "; a remedyd rules file?"
    return f"not a Kubernetes object (no apiVersion and kind{hint}); skipped"


def _yaml_type(data: Any) -> str:
    if isinstance(data, list):
        return "list"
    if isinstance(data, str):
        return "string"
    return type(data).__name__
