"""The cutout output formats: one :class:`Format` per module of this package, registered on import.

Everything that lists formats (the /cutout route and its OpenAPI enum, the job request model, the job
finalizer, the catalog, the portal form) reads them from here, so a new format is one module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labservice.errors import InvalidInput, unknown

if TYPE_CHECKING:
    from labservice.cutout.layout import BlockSource

Writer = Callable[["BlockSource", Path], list[Path]]
Encoder = Callable[["BlockSource", str], Iterator[bytes | memoryview]]


@dataclass(frozen=True)
class Format:
    """An output format.

    Attributes
    ----------
    name, media_type, suffix : str
        The ``format=`` value, the HTTP media type and the file suffix (with its dot).
    description : str
        One line for the API documentation.
    write : callable or None
        ``write(source, path) -> files written``. Formats that need a file (HDF5, NetCDF, zarr) set it.
    encode : callable or None
        ``encode(source, stem) -> byte pieces``: formats that stream straight from the blocks, in order,
        without a temporary file. ``stem`` names the file (the XDMF sidecar points at ``<stem>.h5``).
    aliases : tuple of str
        Other accepted spellings.
    jobs : bool
        Whether a cutout job can write it (jobs keep files the client downloads later).
    sidecar_of : str or None
        The format this one only accompanies (the XDMF text of an HDF5 file); left out of download menus.
    order : int
        Position in every list shown to users.
    raw_tail : bool
        Whether everything after the encoder's first piece is the float32 data of every variable and
        nothing else, so the body's length is known once the first piece is (npy, msgpack).
    """

    name: str
    media_type: str
    suffix: str
    description: str
    write: Writer | None = None
    encode: Encoder | None = None
    aliases: tuple[str, ...] = ()
    jobs: bool = False
    sidecar_of: str | None = None
    order: int = 100
    raw_tail: bool = False

    @property
    def streams(self) -> bool:
        """Whether it is encoded while the data is read (no temporary file)."""
        return self.encode is not None


_FORMATS: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}


def register(fmt: Format) -> Format:
    """Add a format (each format module calls this once, at import)."""
    if fmt.write is None and fmt.encode is None:
        raise ValueError(f"format {fmt.name!r} needs a writer or an encoder")
    for name in (fmt.name, *fmt.aliases):
        owner = _ALIASES.get(name)
        if owner is not None and owner != fmt.name:
            raise ValueError(f"format name {name!r} is taken by {owner!r}")
        _ALIASES[name] = fmt.name
    _FORMATS[fmt.name] = fmt
    return fmt


def all_formats() -> dict[str, Format]:
    """All formats by name, in display order."""
    return dict(sorted(_FORMATS.items(), key=lambda kv: (kv[1].order, kv[0])))


def job_formats() -> list[str]:
    """Names of the formats a cutout job can write, in display order."""
    return [name for name, f in all_formats().items() if f.jobs]


def download_formats() -> list[Format]:
    """The formats a download menu offers (all but sidecars), in display order."""
    return [f for f in all_formats().values() if f.sidecar_of is None]


def accepted_names() -> list[str]:
    """Every name ``check_format`` accepts: the formats in display order, then their aliases."""
    fmts = all_formats().values()
    return [f.name for f in fmts] + [a for f in fmts for a in f.aliases]


def check_format(fmt: str) -> str:
    """Return the canonical format name, or raise InvalidInput naming the choices."""
    key = str(fmt).lower()
    name = _ALIASES.get(key)
    if name is None:
        raise unknown("format", str(fmt), _FORMATS, error=InvalidInput)
    return name


def get_format(fmt: str) -> Format:
    """The :class:`Format` for a name or alias (InvalidInput if unknown)."""
    return _FORMATS[check_format(fmt)]
