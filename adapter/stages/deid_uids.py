"""UID replacement: a pure function of the original UID (and, keyed, of a site secret), so a
study stays a study across instances, restarts and replicas with no mapping table to share.

``name-based`` is the Java adapter's rule (dcm4che ``UIDUtils.createNameBasedUID``): ``2.25.``
followed by the unsigned integer of the version-3 (MD5) UUID of the UID's bytes, as Java's
``UUID.nameUUIDFromBytes`` makes it; a site that moves from the Java adapter keeps its
pseudonymous UIDs. ``hmac``: the same shape from HMAC-SHA-256 keyed with the site secret (an
RFC 9562 version-8 UUID), so nobody without the secret can test a guessed original.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from functools import lru_cache

from adapter.errors import ConfigError
from adapter.stages.deidentify_config import UidConfig

__all__ = ["UidMapper", "load_secret", "name_based_uid"]


def _as_uid(digest: bytes, version: int) -> str:
    b = bytearray(digest[:16])
    b[6] = (b[6] & 0x0F) | (version << 4)
    b[8] = (b[8] & 0x3F) | 0x80  # the IETF variant
    return f"2.25.{int.from_bytes(b, 'big')}"


def name_based_uid(uid: str) -> str:
    """Java's ``UIDUtils.createNameBasedUID(uid.getBytes())``."""
    return _as_uid(hashlib.md5(uid.encode("ascii", "replace")).digest(), 3)


def load_secret(config: UidConfig) -> bytes:
    """The site secret of a keyed mapping (surrounding whitespace stripped)."""
    if config.secret_file is not None:
        try:
            secret = config.secret_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"uids.secret_file: cannot read it: {exc.strerror}") from None
        where = "uids.secret_file"
    else:
        assert config.secret_env is not None  # the model requires one
        secret = os.environ.get(config.secret_env, "").strip().encode()
        where = f"uids.secret_env ({config.secret_env})"
    if len(secret) < 16:
        raise ConfigError(f"{where}: the secret must be at least 16 bytes")
    return secret


class UidMapper:
    """Original UID -> replacement UID (cached: a series repeats its study's UIDs)."""

    def __init__(self, config: UidConfig) -> None:
        self.keyed = config.method == "hmac"
        self._secret = load_secret(config) if self.keyed else b""
        if self.keyed:
            key = self._secret

            def keyed(uid: str) -> str:
                mac = hmac.new(key, uid.encode("ascii", "replace"), hashlib.sha256)
                return _as_uid(mac.digest(), 8)

            self._map: Callable[[str], str] = lru_cache(maxsize=65536)(keyed)
        else:
            self._map = lru_cache(maxsize=65536)(name_based_uid)

    def __call__(self, uid: str) -> str:
        return self._map(uid.rstrip("\x00 "))

    def pseudonym(self, value: str) -> str:
        """A consistent stand-in for an identifier (a Patient ID): 20 hex digits of its hash
        (keyed when the mapping is), so one patient stays one patient."""
        data = b"pseudonym\x00" + value.strip().encode("utf-8", "replace")
        if self.keyed:
            digest = hmac.new(self._secret, data, hashlib.sha256).hexdigest()
        else:
            digest = hashlib.sha256(data).hexdigest()
        return digest[:20].upper()

    def day_offset(self, patient_id: str, span: int = 3650) -> int:
        """A per-patient date shift of -1 to -``span`` days (keyed when the mapping is)."""
        data = b"date-offset\x00" + patient_id.encode("utf-8", "replace")
        if self.keyed:
            digest = hmac.new(self._secret, data, hashlib.sha256).digest()
        else:
            digest = hashlib.sha256(data).digest()
        return -1 - int.from_bytes(digest[:4], "big") % span
