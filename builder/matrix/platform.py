"""The platforms images are built for, each one :class:`Platform` made once from its OCI name.

A platform's name is the OCI ``os/architecture[/variant]`` (image index ``platform`` fields:
https://github.com/opencontainers/image-spec/blob/main/image-index.md). Its other facts live in
:data:`PLATFORMS` and nowhere else: the wheel platform uv resolves it as (``--python-platform``,
https://docs.astral.sh/uv/reference/cli/#uv-pip-compile--python-platform), the QEMU user-emulation
handler an x86_64 machine runs its binaries with (Debian's qemu-user-static names), and the
GitHub-hosted runner that builds it natively in a split run
(https://docs.github.com/en/actions/using-github-hosted-runners/about-github-hosted-runners).
linux/amd64 is :data:`DEFAULT`: the build platform, where uv runs; the others are built by
cross-installing their wheels.

A name is parsed at the edge (matrix.yaml, compat.yaml, a report or lock read back, a command-line
option: :meth:`Platform.parse`, or a pydantic field typed :class:`Platform`) and a
:class:`Platform` travels inward from there. A :class:`Platform` never equals a string: comparing
one with a ``str`` raises TypeError, and so does looking up a platform's name in a dict (or set)
holding that :class:`Platform`, or the other way round: they hash alike, so the dict compares
them. A name that escaped parsing fails loudly wherever it meets its own platform; looked up where
only other platforms are, it is not found, as any missing key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.matrix.inputs import shown


@dataclass(frozen=True, eq=False)
class Platform:
    """One platform: ``name`` (``linux/arm64``), its OCI ``os`` (``linux``), ``arch`` (``arm64``,
    BuildKit's ``TARGETARCH``) and ``variant`` (None); ``machine`` is ``uname -m`` (``aarch64``,
    the Engine's ``Architecture``), ``uv_triple`` uv's ``--python-platform``
    (``aarch64-manylinux_2_28``), ``qemu_handler`` the binfmt_misc handler (``qemu-aarch64``, None
    for linux/amd64) and ``runner`` the GitHub runner label (``ubuntu-22.04-arm``)."""

    name: str
    os: str
    arch: str
    variant: str | None
    machine: str
    uv_triple: str
    qemu_handler: str | None
    runner: str

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            raise TypeError(f"a Platform ({self.name}) compared with the string {other!r}: parse names at the edge")
        return isinstance(other, Platform) and other.name == self.name

    def __hash__(self) -> int:  # the name's: a dict holding this platform compares a name looked up with it (__eq__ raises)
        return hash(self.name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A pydantic field typed :class:`Platform` takes a supported name (or a :class:`Platform`)
        and serializes as the name (https://docs.pydantic.dev/latest/concepts/types/#customizing-validation-with-__get_pydantic_core_schema__)."""
        from pydantic_core import core_schema
        return core_schema.no_info_plain_validator_function(
            _validated, serialization=core_schema.plain_serializer_function_ser_schema(lambda p: p.name, return_schema=core_schema.str_schema()))

    @property
    def is_default(self) -> bool:
        """True for :data:`DEFAULT` (linux/amd64)."""
        return self.name == DEFAULT.name

    @property
    def suffix(self) -> str:
        """What local names and files of this platform end with: ``""`` for linux/amd64, else
        ``-<arch>`` (``builder-base/<key>-arm64``)."""
        return "" if self.is_default else f"-{self.arch}"

    @property
    def tag_suffix(self) -> str:
        """What a per-platform tag ends with, for every platform: ``-amd64``, ``-arm64``."""
        return f"-{self.arch}"

    @classmethod
    def parse(cls, name: str) -> Platform:
        """The :class:`Platform` named ``name`` (``linux/arm64``); raises ValueError naming the
        supported ones for any other."""
        found = PLATFORMS.get(name) if isinstance(name, str) else None
        if found is None:
            raise ValueError(f"{shown(name)} is not a platform (expected one of: {', '.join(PLATFORMS)})")
        return found


def _validated(value: object) -> Platform:
    """``value`` if a :class:`Platform`, else :meth:`Platform.parse` of it (pydantic's validator)."""
    return value if isinstance(value, Platform) else Platform.parse(value)  # type: ignore[arg-type]


def _platform(name: str, machine: str, runner: str, qemu_handler: str | None) -> Platform:
    """A table row: ``name`` is split here, once, into its OCI fields."""
    os, arch, *variant = name.split("/")
    return Platform(name=name, os=os, arch=arch, variant=variant[0] if variant else None, machine=machine,
                    uv_triple=f"{machine}-manylinux_2_28", qemu_handler=qemu_handler, runner=runner)


#: The supported platforms by name, :data:`DEFAULT` first (the order of a split run's jobs).
PLATFORMS: dict[str, Platform] = {p.name: p for p in (
    _platform("linux/amd64", machine="x86_64", runner="ubuntu-22.04", qemu_handler=None),
    _platform("linux/arm64", machine="aarch64", runner="ubuntu-22.04-arm", qemu_handler="qemu-aarch64"),
)}
DEFAULT = PLATFORMS["linux/amd64"]


def oci_name(os: str, arch: str, variant: str | None = None) -> str:
    """The name of a platform by its OCI fields (``os``, ``architecture``, ``variant`` of an image
    config or an index's platform object: https://github.com/opencontainers/image-spec/blob/main/image-index.md):
    ``linux/arm64``, ``linux/arm/v7``. The inverse of a :data:`PLATFORMS` row's fields; the
    platform need not be one the builder supports."""
    return "/".join([os, arch, *([variant] if variant else [])])


def of_machine(machine: str) -> Platform:
    """The platform whose binaries ``machine`` (``uname -m``, ``x86_64``) runs natively; raises
    ValueError naming the supported machines for any other."""
    found = next((p for p in PLATFORMS.values() if p.machine == machine), None)
    if found is None:
        raise ValueError(f"{machine!r} runs no supported platform (expected one of: "
                         f"{', '.join(p.machine for p in PLATFORMS.values())})")
    return found
