"""Content Credentials (C2PA) on recordings and offline outputs, through ``c2pa-python``.

Each file avatarcam writes (a video, or every PNG of a frame folder) gets a signed C2PA
manifest once its sink is closed: an actions assertion ``c2pa.created`` with the digital
source type ``trainedAlgorithmicMedia``, avatarcam as software agent (name and version), and
the SHA-256 of the avatar photos (never the photos themselves), plus an ``avatarcam.synthesis``
assertion naming the invisible watermark embedded.

Signing needs an X.509 certificate chain and its private key. Users may pass their own
(``--c2pa-cert``, ``--c2pa-key``: a certificate a recognised authority issued them is what
makes a manifest *trusted* by verifiers). Otherwise avatarcam generates, on first use, an
ES256 (P-256) key with a two-certificate chain under ``<avatarcam home>/credentials``: a local
root CA, and the end-entity signing certificate it issued with the key usages C2PA requires
(digitalSignature, emailProtection; C2PA rejects self-signed end-entity certificates). Such a
manifest is cryptographically *valid* (the file has not been changed since it was signed,
by whoever holds that key) but not *trusted*: nothing ties the key to a person or company.

The generated certificates name no one: their subject is "avatarcam self-issued signer" (and
"... root"), with no user, host or other identifying field, since the certificate is embedded
in every file it signs. ``--c2pa-signer-name NAME`` puts NAME in the common name instead, for
users who want their files to say who made them. A generated certificate from an older version
(which named ``user@host``), or one whose name differs from what is asked for now, is replaced
on the next run, with a message; the old pair is kept beside it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from engines.cache import default_cache_dir, package_version
from engines.watermark import VERSION as WATERMARK_VERSION

from .errors import InputError, SettingError
from .marking import MarkingOptions

log = logging.getLogger("avatarcam")

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: The media types c2pa-python signs, by output suffix (.mkv has no C2PA binding).
MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
KEY_FILE = "c2pa-key.pem"
CERT_FILE = "c2pa-cert.pem"
#: Lifetime of a self-generated certificate.
CERT_DAYS = 3650
#: Common name of a generated signing certificate when the user gives none (identifies nobody).
ANONYMOUS_SIGNER = "avatarcam self-issued signer"
ORGANIZATION = "avatarcam (self-generated)"


class CredentialsError(InputError):
    """Content Credentials could not be made (bad certificate or key, or signing failed)."""


def credentials_dir() -> Path:
    """``<avatarcam home>/credentials``: ``$AVATARCAM_HOME`` or ``~/.cache/avatarcam``."""
    return default_cache_dir().parent / "credentials"


def _c2pa():
    try:
        import c2pa
    except ImportError as exc:
        raise CredentialsError(
            "Content Credentials need the c2pa-python package, which is missing: "
            "pip install c2pa-python (or reinstall avatarcam: pip install -e .)."
        ) from exc
    return c2pa


def _signer_common_name(signer_name: str | None) -> str:
    return signer_name if signer_name else ANONYMOUS_SIGNER


def _generate(folder: Path, signer_name: str | None = None) -> None:
    """Write a new ES256 key and a local-root + signer certificate chain into ``folder``; the
    certificates name ``signer_name`` when given, else no one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)
    common = _signer_common_name(signer_name)
    root_common = "avatarcam self-issued root" if not signer_name else f"{signer_name} (root)"
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_common), org])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common), org])
    root_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    def builder(subject: x509.Name, key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    root = (
        builder(root_name, root_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    signer = (
        builder(subject, signer_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    key_path = folder / KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            signer_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    pem = serialization.Encoding.PEM
    # The chain C2PA embeds: the signer, then its issuer (the local root).
    (folder / CERT_FILE).write_bytes(signer.public_bytes(pem) + root.public_bytes(pem))


def _common_name(cert: Path) -> str | None:
    """The common name of the first certificate in ``cert``, or None when unreadable."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        first = x509.load_pem_x509_certificates(cert.read_bytes())[0]
        names = first.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError, IndexError):
        return None
    return str(names[0].value) if names else ""


def _make(folder: Path, signer_name: str | None) -> None:
    """Generate a pair in a staging folder and move it to ``folder`` (which must not exist)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".credentials-", dir=folder.parent))
    try:
        _generate(staging, signer_name)
        # Key and certificate appear together or not at all; when another process got
        # there first, its pair is kept.
        try:
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _retire(folder: Path, found: str | None, wanted: str) -> None:
    """Move an old generated pair aside (kept, not deleted), saying why."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}-replaced-{stamp}")
    os.replace(folder, aside)
    log.warning(
        "replaced the generated Content Credentials certificate in %s: it named %r, and that "
        "name is embedded in every file it signs; the new one names %r (--c2pa-signer-name "
        "sets it). The old key and certificate are kept in %s: delete them when no longer "
        "needed.",
        folder,
        found,
        wanted,
        aside,
    )


def own_identity(folder: Path | None = None, signer_name: str | None = None) -> tuple[Path, Path]:
    """The self-generated (certificate chain, key) files, made on first use; a pair whose
    common name is not the one asked for (``signer_name``, else no one) is replaced."""
    folder = folder or credentials_dir()
    cert, key = folder / CERT_FILE, folder / KEY_FILE
    wanted = _signer_common_name(signer_name)
    try:
        if cert.is_file() and key.is_file():
            found = _common_name(cert)
            if found == wanted:
                return cert, key
            _retire(folder, found, wanted)
        _make(folder, signer_name)
    except OSError as exc:
        raise CredentialsError(
            f"Could not create the Content Credentials key in {folder} ({exc}). Set "
            "AVATARCAM_HOME to a writable folder, or pass --c2pa-cert and --c2pa-key."
        ) from None
    if not (cert.is_file() and key.is_file()):
        raise CredentialsError(
            f"{folder} exists but lacks {CERT_FILE} or {KEY_FILE}. Remove the folder to have "
            "avatarcam generate a new signing key, or pass --c2pa-cert and --c2pa-key."
        )
    log.info("generated a Content Credentials signing key and certificate in %s", folder)
    return cert, key


def _algorithm(cert_pem: bytes, key_pem: bytes, cert_path: Path, key_path: Path) -> str:
    """The C2PA signing algorithm for a user's key, after checking it matches the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise SettingError(
            f"--c2pa-cert {cert_path} is not a PEM certificate chain (expected "
            "-----BEGIN CERTIFICATE----- blocks, the signing certificate first)."
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise SettingError(
            f"--c2pa-key {key_path} is not an unencrypted PEM private key (-----BEGIN PRIVATE "
            "KEY-----). Export it without a passphrase."
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != chain[0].public_key().public_bytes(
        der, public
    ):
        raise SettingError(
            f"--c2pa-key {key_path} does not belong to the first certificate of --c2pa-cert "
            f"{cert_path}. Pass the key of the signing certificate."
        )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in names:
            return names[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise SettingError(
        f"--c2pa-key {key_path}: C2PA signs with P-256/384/521 EC, RSA (PSS) or Ed25519 keys."
    )


class ContentCredentials:
    """Signs avatarcam's output files; set up before the run so bad keys fail early."""

    def __init__(self, marking: MarkingOptions, avatars: Sequence[Path]):
        if marking.c2pa_cert is not None and marking.c2pa_key is not None:
            cert_path, key_path = marking.c2pa_cert.expanduser(), marking.c2pa_key.expanduser()
            for flag, path in (("--c2pa-cert", cert_path), ("--c2pa-key", key_path)):
                if not path.is_file():
                    raise SettingError(f"{flag} {path} is not a file. Pass a PEM file.")
        else:
            cert_path, key_path = own_identity(signer_name=marking.c2pa_signer_name)
        self._cert, self._key = cert_path.read_bytes(), key_path.read_bytes()
        self._alg = _algorithm(self._cert, self._key, cert_path, key_path)
        self.cert_path = cert_path  # the certificate chain signing the files
        self.watermark = marking.watermark  # whether frames carry the invisible watermark
        self.avatar_sha256 = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in avatars]
        c2pa = _c2pa()
        # Test the key once now, not after a long run.
        self._signer().close()
        settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        self._context = c2pa.Context(settings)

    def _signer(self):
        c2pa = _c2pa()
        try:
            info = c2pa.C2paSignerInfo(self._alg.encode(), self._cert, self._key, None)
            return c2pa.Signer.from_info(info)
        except c2pa.C2paError as exc:
            raise CredentialsError(
                f"c2pa cannot sign with the certificate {self.cert_path}: {exc}. C2PA needs an "
                "end-entity certificate (not self-signed) with the digitalSignature key usage."
            ) from None

    def manifest(self, title: str, media_type: str) -> dict:
        """The manifest definition of one file."""
        version = package_version("avatarcam") or "unknown"
        return {
            "claim_generator_info": [{"name": "avatarcam", "version": version}],
            "title": title,
            "format": media_type,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                                "softwareAgent": {"name": "avatarcam", "version": version},
                                "parameters": {"avatarcam.avatar_sha256": self.avatar_sha256},
                            }
                        ]
                    },
                },
                {
                    "label": "avatarcam.synthesis",
                    "data": {
                        "avatar_sha256": self.avatar_sha256,
                        "watermark": f"avatarcam-watermark/v{WATERMARK_VERSION}"
                        if self.watermark
                        else "none (--no-watermark)",
                    },
                },
            ],
        }

    def sign_file(self, path: Path) -> bool:
        """Embed a signed manifest in ``path`` (replaced atomically); False when its format
        has no C2PA binding."""
        media_type = MEDIA_TYPES.get(path.suffix.lower())
        if media_type is None:
            log.warning(
                "warning: %s cannot carry Content Credentials (C2PA has no binding for %s "
                "files); its frames still carry the invisible watermark. Write .mp4 or .mov "
                "to get both.",
                path,
                path.suffix,
            )
            return False
        c2pa = _c2pa()
        temporary = path.with_name(f".{path.name}.c2pa-tmp")
        signer = self._signer()
        try:
            builder = c2pa.Builder(self.manifest(path.name, media_type), context=self._context)
            with builder, open(path, "rb") as source, open(temporary, "w+b") as target:
                builder.sign(signer, media_type, source, target)
            os.replace(temporary, path)
        except (c2pa.C2paError, OSError) as exc:
            raise CredentialsError(
                f"{path} was written but could not be signed with Content Credentials: {exc}. "
                "Its frames still carry the invisible watermark."
            ) from None
        finally:
            signer.close()
            temporary.unlink(missing_ok=True)
        return True

    def sign_output(self, output: Path, frames: int) -> int:
        """Sign what a run wrote to ``output`` (a video file, or a folder of ``frames`` PNGs
        named 000000.png, ...); returns the number of files signed."""
        output = Path(output).expanduser()
        if output.is_dir():
            files = [output / f"{i:06d}.png" for i in range(frames)]
            signed = sum(self.sign_file(f) for f in files if f.is_file())
        else:
            signed = int(self.sign_file(output))
        if signed:
            log.info(
                "Content Credentials: signed %d file%s (certificate %s)",
                signed,
                "" if signed == 1 else "s",
                self.cert_path,
            )
        return signed


def _codes(results: object) -> dict[str, list[str]]:
    """c2pa's validation codes of the active manifest, by kind (success, informational,
    failure)."""
    active = results.get("activeManifest", {}) if isinstance(results, dict) else {}
    return {
        kind: [str(item.get("code")) for item in active.get(kind, []) if isinstance(item, dict)]
        for kind in ("success", "informational", "failure")
    }


def trust(state: str, codes: dict[str, list[str]]) -> str:
    """What a manifest's validation means for who signed it: "trusted" (the signing
    certificate chains to an authority the verifier trusts), "untrusted" (a valid signature
    by a certificate nobody vouches for, e.g. a self-issued one: its names prove nothing), or
    "invalid"."""
    other_failures = [c for c in codes.get("failure", []) if c != "signingCredential.untrusted"]
    if state == "Invalid" or other_failures:
        return "invalid"
    if state == "Trusted" or "signingCredential.trusted" in codes.get("success", []):
        return "trusted"
    return "untrusted"


def read_manifest(path: Path) -> dict | None:
    """The active C2PA manifest of ``path`` with its validation state, c2pa's validation
    codes and what they mean for trust (:func:`trust`), or None when it has none. Raises
    CredentialsError when c2pa cannot parse the file's manifest."""
    c2pa = _c2pa()
    try:
        reader = c2pa.Reader.try_create(str(path))
    except c2pa.C2paError as exc:
        text = str(exc)
        if "NotSupported" in type(exc).__name__ or "not supported" in text.lower():
            return None
        return {"state": "Invalid", "trust": "invalid", "error": text}
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
        state = reader.get_validation_state()
        codes = _codes(reader.get_validation_results())
        return {"state": state, "trust": trust(state, codes), "codes": codes, "manifest": manifest}
