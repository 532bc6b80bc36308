"""The web configuration file Prometheus exporters take (--web-config), read
the same way: TLS from `tls_server_config`, basic auth from
`basic_auth_users` (user: bcrypt hash, as `htpasswd -nBC 10` or
`python3 -c 'import bcrypt; print(bcrypt.hashpw(b"pw", bcrypt.gensalt()).decode())'`
print it).

    tls_server_config:
      cert_file: /etc/tcpoom/tls.crt
      key_file: /etc/tcpoom/tls.key
      client_ca_file: /etc/tcpoom/ca.crt            # optional
      client_auth_type: RequireAndVerifyClientCert  # optional
    basic_auth_users:
      prometheus: $2y$10$...
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import ssl
import threading
from typing import Dict, Optional

from ..errors import UsageError

CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "RequireAnyClientCert": ssl.CERT_REQUIRED, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


@dataclasses.dataclass
class WebConfig:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    client_auth_type: str = "NoClientCert"
    users: Dict[str, bytes] = dataclasses.field(default_factory=dict)
    _ok: Dict[str, bytes] = dataclasses.field(default_factory=dict, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    @property
    def auth(self) -> bool:
        return bool(self.users)

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.tls:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
        ctx.verify_mode = CLIENT_AUTH[self.client_auth_type]
        return ctx

    def check(self, authorization: Optional[str]) -> bool:
        """The Authorization header against the users (True without users)."""
        if not self.users:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        # bcrypt costs ~50 ms a check at cost 10: remember a good password (its
        # digest), so a scrape every second does not spend a core on it
        digest = hashlib.sha256(password.encode()).digest()
        with self._lock:
            known = self._ok.get(user)
        if known is not None:
            return hmac.compare_digest(known, digest)
        import bcrypt
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                self._ok[user] = digest
        return ok


def _bcrypt_hash(user: str, value) -> bytes:
    if not isinstance(value, str) or not value.startswith(("$2a$", "$2b$", "$2y$")):
        raise UsageError(f"--web-config: basic_auth_users.{user} is not a bcrypt hash ($2y$...)")
    # Go's bcrypt writes $2y$ (as htpasswd does); the same algorithm as $2b$
    return ("$2b$" + value[4:]).encode()


def parse(data, path: str = "web config") -> WebConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"--web-config {path}: expected a mapping at the top")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise UsageError(f"--web-config {path}: unknown key {sorted(unknown)[0]}")
    cfg = WebConfig()
    tls = data.get("tls_server_config") or {}
    if tls:
        if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
            raise UsageError(f"--web-config {path}: tls_server_config needs cert_file and key_file")
        base = os.path.dirname(os.path.abspath(path))
        # relative paths are relative to the config file, as the exporters have it
        cfg.cert_file = os.path.join(base, tls["cert_file"])
        cfg.key_file = os.path.join(base, tls["key_file"])
        if tls.get("client_ca_file"):
            cfg.client_ca_file = os.path.join(base, tls["client_ca_file"])
        cfg.client_auth_type = tls.get("client_auth_type", "NoClientCert")
        if cfg.client_auth_type not in CLIENT_AUTH:
            raise UsageError(f"--web-config {path}: client_auth_type {cfg.client_auth_type!r} "
                             f"is not one of {', '.join(CLIENT_AUTH)}")
        for f in (cfg.cert_file, cfg.key_file, cfg.client_ca_file):
            if f and not os.access(f, os.R_OK):
                raise UsageError(f"--web-config {path}: cannot read {f}")
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise UsageError(f"--web-config {path}: basic_auth_users must map user names to bcrypt hashes")
    if users:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise UsageError(f"--web-config {path}: basic_auth_users needs the bcrypt module "
                             f"(Debian: python3-bcrypt)") from None
    cfg.users = {str(u): _bcrypt_hash(str(u), h) for u, h in users.items()}
    return cfg


def load(path: str) -> WebConfig:
    try:
        import yaml
    except ImportError:
        raise UsageError("--web-config needs the yaml module (Debian: python3-yaml)") from None
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise UsageError(f"--web-config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"--web-config {path}: not YAML: {str(e).splitlines()[0]}") from None
    cfg = parse(data, path)
    try:
        cfg.ssl_context()
    except (ssl.SSLError, OSError) as e:
        raise UsageError(f"--web-config {path}: TLS: {e}") from None
    return cfg
