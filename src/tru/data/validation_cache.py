"""Remember which dataset contents passed validation, so that a command does not run the Great
Expectations suite again on bytes it has already checked.

Validation (:func:`tru.data.validate.validate_dataset`) costs about 4.5 s of every ``tru unlearn`` /
``tru certify`` process on MovieLens-100K, most of it importing Great Expectations, while the data
version rarely changes between commands. A passed validation leaves a stamp named by

    fingerprint = HMAC-SHA256(K, rules ‖ manifest bytes ‖ (name ‖ bytes) of every file it names)

with K the installation's commitment key if one exists (:func:`tru.forget.commitment.existing_commitment_key`:
loading data never creates one; without a key nothing is remembered), every part length-prefixed, and
``rules`` the source of the validation modules, the tru version and the versions of Great Expectations,
pandas and NumPy (new rules or an upgrade validate again). The next load of the
same bytes finds the stamp and skips the suite; any change to the manifest, the interactions or a
feature file is a new fingerprint, validated again. A failed validation is never remembered. The stamp
holds no data and, being keyed, no hash that a guess of the contents could be checked against (a
dataset that held deleted rows leaves nothing confirmable behind).

Where: ``$TRU_VALIDATION_CACHE`` (a folder; ``off`` disables the cache), else
``~/.cache/tru/validated``. A cache that cannot be read or written is no cache: the suite runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

LOG = logging.getLogger("tru")
CACHE_ENV = "TRU_VALIDATION_CACHE"
DEFAULT_CACHE = Path("~/.cache/tru/validated")
#: the modules whose source is the validation rules
RULE_MODULES = ("dataset.py", "validate.py", "validate_core.py", "validate_features.py")
#: the libraries whose behaviour is part of the rules (an upgrade validates again)
RULE_LIBRARIES = ("great-expectations", "pandas", "numpy")


def cache_dir() -> Path | None:
    """The stamp folder, or None when ``$TRU_VALIDATION_CACHE`` is ``off``."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if raw.lower() == "off":
        return None
    return Path(raw or DEFAULT_CACHE).expanduser()


def fingerprint(folder: Path) -> str | None:
    """The keyed fingerprint of the folder's manifest and the files it names (module docstring); None
    when it cannot be computed (no readable manifest, a missing file, no key): then nothing is skipped."""
    from tru import __version__
    from tru.data.dataset import MANIFEST_NAME, DataError, DatasetManifest
    from tru.forget.commitment import existing_commitment_key

    key = existing_commitment_key()  # never creates one: loading data must not mint an installation key
    if key is None:
        return None
    try:
        manifest = DatasetManifest.load(folder)
        mac = hmac.new(key, b"tru-validation-v2", hashlib.sha256)

        def part(data: bytes) -> None:  # length-prefixed: no bytes can move from one part to the next
            mac.update(len(data).to_bytes(8, "little"))
            mac.update(data)

        part(" ".join([__version__, *(f"{m}={_version(m)}" for m in RULE_LIBRARIES)]).encode())
        here = Path(__file__).parent
        for name in RULE_MODULES:
            part((here / name).read_bytes())
        part((folder / MANIFEST_NAME).read_bytes())
        for field, rel in sorted(manifest.files().items()):
            part(f"{field}\0{rel}".encode())
            part((folder / rel).read_bytes())
        return mac.hexdigest()
    except (OSError, DataError, ValueError, TypeError):
        return None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def seen_valid(digest: str | None) -> bool:
    """Whether these contents passed validation before (a stamp exists)."""
    where = cache_dir()
    return bool(digest and where is not None and (where / digest).is_file())


def remember_valid(digest: str, checks: int) -> None:
    """Leave the stamp of a passed validation (atomically; a cache that cannot be written is skipped)."""
    where = cache_dir()
    if where is None:
        return
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{digest}.{os.getpid()}.tmp"
        stamp = {"validated_at": datetime.now(UTC).isoformat(timespec="seconds"), "checks": checks}
        tmp.write_text(json.dumps(stamp) + "\n")
        os.replace(tmp, where / digest)
    except OSError as exc:
        LOG.debug("validation cache %s not written: %s", where, exc)
