"""LoRA adapters on the server: the names found in `tunesmith serve --lora-dir DIR` (never a client's path),
the set the default model was started with (`--lora NAME@SCALE`), and GET /api/loras listing them.

An adapter's name is a sub-folder of DIR holding adapter_model.safetensors (a PEFT folder), or a .safetensors
file in DIR without its suffix. A job's `lora` field names its set (NAME or NAME@SCALE, or a list); the job stores
the names and scales (none given: the model's --lora set), and the worker swaps that set into the loaded model
(Family.use_lora) for the job's batch: jobs of one set batch together (spec.batch_key)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from ..errors import InvalidParameter, TunesmithError
from ..lora import SCALE_LIMIT, WEIGHTS, AdapterSpec, check_fit, check_scale, check_specs

NAME_LIMIT = 200  # characters of an adapter's name
STACK_LIMIT = 8  # adapters stacked in one job


def adapter_names(folder: Path | None) -> dict[str, Path]:
    """name -> path of every adapter in `folder` (sorted by name); {} when there is no folder."""
    if folder is None:
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and (path / WEIGHTS).is_file():
            found[path.name] = path
        elif path.is_file() and path.suffix == ".safetensors":
            found.setdefault(path.stem, path)
    return found


def find_adapter(folder: Path | None, name, what: str = "lora") -> Path:
    """The path of adapter `name` in `folder`, refused in one line when the name is no adapter's there (a path,
    "..", a name not found, or a server started without --lora-dir)."""
    if folder is None:
        raise InvalidParameter(f"{what}: this server offers no LoRA adapters (start it with --lora-dir DIR)")
    if not isinstance(name, str) or not name or len(name) > NAME_LIMIT:
        raise InvalidParameter(f"{what} must be an adapter's name from GET /api/loras")
    found = adapter_names(folder)
    if name not in found:  # a path, "..", or a name not there: never looked up outside the folder
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidParameter(f"{what} {shown!r} is not an adapter of this server (GET /api/loras lists "
                               f"{len(found)})")
    return found[name]


def parse_named(values: list[str], folder: Path | None, what: str = "--lora") -> list[tuple[str, AdapterSpec]]:
    """NAME[@SCALE] entries -> [(name, AdapterSpec)], each name found in the folder and its file checked."""
    named = []
    for value in values:
        name, at, scale = value.rpartition("@") if "@" in value else (value, "", "")
        if at:
            try:
                number = float(scale)
            except ValueError:
                raise InvalidParameter(f"{what} {value}: the scale after @ must be a number from "
                                       f"-{SCALE_LIMIT:g} to {SCALE_LIMIT:g}") from None
        else:
            number = 1.0
        path = find_adapter(folder, name, f"{what} {name}" if at else what)
        spec, = check_specs([(path, check_scale(number, what))], what)
        named.append((name, spec))
    return named


def describe_named(named: list[tuple[str, AdapterSpec]]) -> list[dict]:
    return [dict(name=name, scale=spec.scale) for name, spec in named]


def job_lora(value, folder: Path | None, default: list[tuple[str, AdapterSpec]], entry,
             fittings=None) -> list | None:
    """A job's `lora` field (NAME, NAME@SCALE or a list of them) -> [[name, scale], ...] as the job stores it, each
    name found in the folder; none given: the model's --lora set. None when nothing is stored (no --lora-dir, or
    a family without adapters). Refused in one line: a name outside the folder, a bad scale, another family, and,
    where `fittings` (fittings.Fittings) holds the model's shapes, recorded as it loaded, an adapter that does not
    fit it."""
    from ..family import FAMILIES

    spec = FAMILIES[entry.family]
    swaps = "swap_lora" in spec.loading  # the worker swaps each batch's set into the loaded model
    if value is not None and not swaps:
        *others, last = [s.display for s in FAMILIES.values() if "swap_lora" in s.loading]
        takers = f"{', '.join(others)} and {last}" if others else last
        raise InvalidParameter(f"lora: {entry.name} is a {spec.display} model; LoRA adapters apply to {takers} models")
    if value is None:
        return None if folder is None or not swaps else [[n, s.scale] for n, s in default]
    items = [value] if isinstance(value, str) else list(value)
    if len(items) > STACK_LIMIT:
        raise InvalidParameter(f"lora: at most {STACK_LIMIT} adapters a job, got {len(items)}")
    named = parse_named([str(v) for v in items], folder, "lora")
    fitting = fittings.get(entry.name, entry.source) if fittings is not None else None
    if fitting is not None and fitting.family == entry.family:
        check_named_fit(named, fitting, entry.name)
    return [[n, s.scale] for n, s in named]


def check_named_fit(named: list[tuple[str, AdapterSpec]], fitting, model: str):
    """Each adapter's layers against the model's shapes, from the adapters' headers (kept by file stamp: a
    submit reads no file again unless it changed); one line naming the adapter by its name, never its path."""
    from ..family import FAMILIES

    locate = FAMILIES[fitting.family].adapter_locator(fitting.arguments)
    for name, spec in named:
        try:
            check_fit(f"lora {name!r}", spec.path, locate, fitting.shapes, model)
        except TunesmithError as err:
            raise InvalidParameter(str(err)) from None


def adapters_of(stored: list, folder: Path | None) -> list[AdapterSpec]:
    """A job's stored [[name, scale], ...] -> the AdapterSpecs the worker merges (each looked up again: an
    adapter removed from the folder since fails the job in one line)."""
    return [spec for _, spec in parse_named([f"{name}@{scale!r}" for name, scale in stored], folder, "lora")]


def lora_routes(folder: Path | None, running: list[tuple[str, AdapterSpec]], model: str) -> APIRouter:
    router = APIRouter(tags=["loras"])

    @router.get("/api/loras")
    def loras():
        """The LoRA adapters in the server's --lora-dir, by name (a job's `lora` names them), and the default
        model's --lora set: what its jobs that name none run with."""
        return dict(loras=[dict(name=name, form="peft folder" if path.is_dir() else "file")
                           for name, path in adapter_names(folder).items()],
                    active=dict(model=model, loras=describe_named(running)))

    return router
