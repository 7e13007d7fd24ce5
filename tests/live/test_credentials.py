"""The generated signing certificate names no one (unless asked), old ones that named the user
are replaced, and verify says whether a valid signature comes from a trusted signer."""

from __future__ import annotations

import getpass
import json
import logging
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography import x509

from live.cli import main
from live.credentials import ANONYMOUS_SIGNER, ContentCredentials, own_identity, trust
from live.marking import MarkingOptions


def _subjects(cert: Path) -> list[str]:
    chain = x509.load_pem_x509_certificates(cert.read_bytes())
    return [c.subject.rfc4514_string() + " / " + c.issuer.rfc4514_string() for c in chain]


USER, HOST = "jane-doe-account", "janes-laptop"  # names nobody else has


@pytest.fixture
def user(monkeypatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: USER)
    monkeypatch.setattr(socket, "gethostname", lambda: HOST)


def test_generated_certificate_names_no_user_or_host(tmp_path: Path, user) -> None:
    cert, _ = own_identity(tmp_path / "credentials")
    text = " ".join(_subjects(cert))
    assert ANONYMOUS_SIGNER in text
    assert USER not in text and HOST not in text, text


def test_signer_name_only_when_asked(tmp_path: Path) -> None:
    cert, _ = own_identity(tmp_path / "credentials", signer_name="Jane Doe")
    assert _subjects(cert)[0].startswith("O=avatarcam (self-generated),CN=Jane Doe")


def test_old_certificate_with_the_users_name_is_replaced(tmp_path: Path, caplog, user) -> None:
    folder = tmp_path / "credentials"
    old_name = f"avatarcam {USER}@{HOST}"  # what earlier versions generated
    old_cert, _ = own_identity(folder, signer_name=old_name)
    old_bytes = old_cert.read_bytes()
    with caplog.at_level(logging.WARNING, logger="avatarcam"):
        cert, key = own_identity(folder)
    assert cert.read_bytes() != old_bytes and USER not in " ".join(_subjects(cert))
    assert "replaced the generated Content Credentials certificate" in caplog.text
    (kept,) = tmp_path.glob("credentials-replaced-*")
    assert (kept / "c2pa-cert.pem").read_bytes() == old_bytes  # kept, not deleted
    assert own_identity(folder) == (cert, key)  # no further replacement


def test_signer_name_is_validated() -> None:
    from live.errors import SettingError

    with pytest.raises(SettingError, match="--c2pa-signer-name"):
        MarkingOptions(c2pa_signer_name="a\nb")


@pytest.fixture
def signed_png(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("AVATARCAM_HOME", str(tmp_path / "home"))
    image = tmp_path / "signed.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 90, np.uint8))
    ContentCredentials(MarkingOptions(), [image]).sign_file(image)
    return image


def test_verify_says_the_self_issued_signer_is_not_trusted(signed_png: Path, capsys) -> None:
    main(["verify", str(signed_png)])
    out = capsys.readouterr().out
    assert "valid signature, signer not trusted (self-issued certificate" in out
    assert f"its certificate says {ANONYMOUS_SIGNER!r}" in out and "signed by" not in out
    main(["verify", "--json", str(signed_png)])
    c2pa = json.loads(capsys.readouterr().out)["c2pa"]
    assert c2pa["trust"] == "untrusted"
    assert "signingCredential.untrusted" in c2pa["codes"]["failure"]
    assert "claimSignature.validated" in c2pa["codes"]["success"]


def test_trust_from_the_validation_codes() -> None:
    valid = {"success": ["claimSignature.validated"], "failure": []}
    assert trust("Trusted", valid) == "trusted"
    untrusted = {
        "success": ["claimSignature.validated"],
        "failure": ["signingCredential.untrusted"],
    }
    assert trust("Valid", untrusted) == "untrusted"
    tampered = {"success": [], "failure": ["assertion.dataHash.mismatch"]}
    assert trust("Valid", tampered) == "invalid"
    assert trust("Invalid", valid) == "invalid"
