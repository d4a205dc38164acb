"""CertStore: certbot's layout, permissions, names, versions, pruning, the lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import configobj  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certmint.client.errors import ClientError
from certmint.client.storage import CertStore, Paths, default_paths

from .certfiles import issue, params

NAME = "example.com"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "work", tmp_path / "logs")


@pytest.fixture
def store(paths: Paths) -> CertStore:
    return CertStore(paths)


def test_default_paths() -> None:
    root = default_paths(True, Path("/root"))
    assert root == Paths(
        Path("/etc/letsencrypt"), Path("/var/lib/letsencrypt"), Path("/var/log/letsencrypt")
    )
    user = default_paths(False, Path("/home/u"))
    assert user.config_dir == Path("/home/u/.config/certmint")
    assert user.work_dir == Path("/home/u/.local/share/certmint")
    assert user.logs_dir == Path("/home/u/.local/state/certmint")


def test_save_new_writes_certbots_layout(store: CertStore, paths: Paths) -> None:
    issued = issue([NAME, "www.example.com"])
    lineage = store.save_new(NAME, **issued.files(), params=params())
    live, archive = paths.config_dir / "live" / NAME, paths.config_dir / "archive" / NAME
    for kind in ("cert", "chain", "fullchain", "privkey"):
        link = live / f"{kind}.pem"
        assert link.is_symlink()
        assert os.readlink(link) == f"../../archive/{NAME}/{kind}1.pem"
    assert (archive / "cert1.pem").read_bytes() == issued.cert_pem
    assert (archive / "chain1.pem").read_bytes() == issued.chain_pem
    assert (archive / "fullchain1.pem").read_bytes() == issued.fullchain_pem
    assert (archive / "privkey1.pem").read_bytes() == issued.key_pem
    # Permissions: keys private, the archive closed, the rest readable.
    assert mode(archive / "privkey1.pem") == 0o600
    assert mode(archive / "cert1.pem") == 0o644
    assert mode(archive) == 0o700
    assert mode(paths.config_dir / "archive") == 0o700
    assert mode(paths.config_dir / "live") == 0o700
    assert (live / "README").is_file() and (paths.config_dir / "live" / "README").is_file()
    assert sorted(os.listdir(archive)) == [
        "cert1.pem",
        "chain1.pem",
        "fullchain1.pem",
        "privkey1.pem",
    ]

    conf = configobj.ConfigObj(str(paths.config_dir / "renewal" / f"{NAME}.conf"))
    assert conf["archive_dir"] == str(archive)
    assert conf["cert"] == str(live / "cert.pem")
    assert conf["privkey"] == str(live / "privkey.pem")
    assert conf["renewalparams"]["authenticator"] == "standalone"
    assert conf["renewalparams"]["http01_port"] == "5002"

    assert lineage.name == NAME and lineage.version == 1
    assert lineage.cert_path == live / "cert.pem"
    assert lineage.privkey_path.read_bytes() == issued.key_pem
    assert lineage.names() == (NAME, "www.example.com")
    assert lineage.params == params()
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert lineage.not_after == cert.not_valid_after_utc
    assert lineage.not_before == cert.not_valid_before_utc
    assert lineage.certificate() == cert


def test_load_exists_and_lineages(store: CertStore) -> None:
    assert store.lineages() == [] and not store.exists(NAME)
    with pytest.raises(ClientError, match=r"no certificate named example\.com"):
        store.load(NAME)
    saved = store.save_new(NAME, **issue().files(), params=params())
    other = store.save_new("b.example", **issue(["b.example"]).files(), params=params())
    assert store.exists(NAME)
    assert store.load(NAME) == saved
    assert [lineage.name for lineage in store.lineages()] == ["b.example", NAME]
    assert store.lineages()[0] == other


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", " x"])
def test_unusable_names(store: CertStore, bad: str) -> None:
    with pytest.raises(ClientError, match="not a usable certificate name"):
        store.save_new(bad, **issue().files(), params=params())


def test_taken_name_gets_certbots_suffix(store: CertStore) -> None:
    first = store.save_new(NAME, **issue().files(), params=params())
    second = store.save_new(NAME, **issue().files(), params=params())
    third = store.save_new(NAME, **issue().files(), params=params())
    assert (first.name, second.name, third.name) == (NAME, f"{NAME}-0001", f"{NAME}-0002")
    assert store.load(NAME).cert_pem != store.load(f"{NAME}-0001").cert_pem


def test_foreign_directory_is_not_overwritten(store: CertStore, paths: Paths) -> None:
    foreign = paths.config_dir / "archive" / NAME
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    lineage = store.save_new(NAME, **issue().files(), params=params())
    assert lineage.name == f"{NAME}-0001"
    assert (foreign / "notes.txt").read_text() == "mine"


def test_save_renewal_switches_links_and_prunes(store: CertStore, paths: Paths) -> None:
    store.save_new(NAME, **issue().files(), params=params())
    archive = paths.config_dir / "archive" / NAME
    for expected_version in range(2, 10):
        issued = issue()
        lineage = store.save_renewal(
            NAME, **issued.files(), params=params(pre_hook=f"echo {expected_version}")
        )
        assert lineage.version == expected_version
        assert lineage.cert_path.read_bytes() == issued.cert_pem
        assert lineage.privkey_path.read_bytes() == issued.key_pem
        assert lineage.params.pre_hook == f"echo {expected_version}"
        assert os.readlink(lineage.cert_path) == f"../../archive/{NAME}/cert{expected_version}.pem"
        assert mode(archive / f"privkey{expected_version}.pem") == 0o600
    versions = sorted(
        {
            int(e.removeprefix("privkey")[:-4])
            for e in os.listdir(archive)
            if e.startswith("privkey")
        }
    )
    assert versions == [4, 5, 6, 7, 8, 9]  # the current and five previous
    assert len(os.listdir(archive)) == 24
    assert not [e for e in os.listdir(paths.config_dir / "live" / NAME) if e.startswith(".")]


def test_save_renewal_of_missing_lineage(store: CertStore) -> None:
    with pytest.raises(ClientError, match="no certificate named"):
        store.save_renewal(NAME, **issue().files(), params=params())


def test_renewal_keeps_unknown_conf_content_and_key_group_read(
    store: CertStore, paths: Paths
) -> None:
    store.save_new(NAME, **issue().files(), params=params())
    conf_path = paths.config_dir / "renewal" / f"{NAME}.conf"
    conf_path.write_text(conf_path.read_text() + "[acme_renewal_info]\nreplaces = abc.def\n")
    os.chmod(paths.config_dir / "archive" / NAME / "privkey1.pem", 0o640)
    lineage = store.save_renewal(NAME, **issue().files(), params=params())
    assert configobj.ConfigObj(str(conf_path))["acme_renewal_info"] == {"replaces": "abc.def"}
    assert mode(lineage.archive_dir / "privkey2.pem") == 0o640


def test_half_written_higher_version_is_ignored_then_pruned(store: CertStore) -> None:
    first = store.save_new(NAME, **issue().files(), params=params())
    (first.archive_dir / "cert7.pem").write_bytes(b"half")
    (first.archive_dir / "privkey7.pem").write_bytes(b"half")
    assert store.load(NAME).version == 1
    issued = issue()
    lineage = store.save_renewal(NAME, **issued.files(), params=params())
    assert lineage.version == 8 and lineage.cert_path.read_bytes() == issued.cert_pem
    assert "cert7.pem" not in os.listdir(lineage.archive_dir)


def test_prune_keeps_certbots_reuse_key_symlink_targets(store: CertStore) -> None:
    first = store.save_new(NAME, **issue().files(), params=params())
    for _ in range(4):
        store.save_renewal(NAME, **issue().files(), params=params())
    # certbot's --reuse-key makes privkeyN.pem a symlink to an older key.
    archive = first.archive_dir
    (archive / "privkey5.pem").unlink()
    os.symlink("privkey1.pem", archive / "privkey5.pem")
    for _ in range(4):
        store.save_renewal(NAME, **issue().files(), params=params())
    names = os.listdir(archive)
    assert "privkey5.pem" in names and "privkey1.pem" in names
    assert "cert1.pem" not in names and "cert4.pem" in names and "cert3.pem" not in names


def test_prune_counts_versions_not_numbers(store: CertStore) -> None:
    first = store.save_new(NAME, **issue().files(), params=params())
    (first.archive_dir / "cert20.pem").write_bytes(b"a killed run's leftover")
    lineage = store.save_renewal(NAME, **issue().files(), params=params())
    assert lineage.version == 21
    # Version 1 is the one previous version: kept although 21 - 5 > 1.
    assert sorted(os.listdir(first.archive_dir)) == sorted(
        f"{kind}{v}.pem" for kind in ("cert", "chain", "fullchain", "privkey") for v in (1, 21)
    )


def test_delete(store: CertStore, paths: Paths) -> None:
    store.save_new(NAME, **issue().files(), params=params())
    store.save_new("keep.example", **issue(["keep.example"]).files(), params=params())
    store.delete(NAME)
    assert not store.exists(NAME)
    assert not (paths.config_dir / "live" / NAME).exists()
    assert not (paths.config_dir / "archive" / NAME).exists()
    assert [lineage.name for lineage in store.lineages()] == ["keep.example"]
    with pytest.raises(ClientError, match="no certificate named"):
        store.delete(NAME)


def test_broken_lineages_are_reported_not_fatal(store: CertStore, paths: Paths) -> None:
    store.save_new(NAME, **issue().files(), params=params())
    store.save_new("b.example", **issue(["b.example"]).files(), params=params())
    store.save_new("c.example", **issue(["c.example"]).files(), params=params())
    (paths.config_dir / "renewal" / "b.example.conf").write_text("[renewalparams\n")
    cert_link = paths.config_dir / "live" / "c.example" / "cert.pem"
    cert_link.unlink()
    cert_link.write_bytes(issue().cert_pem)  # a copy instead of the link
    assert [lineage.name for lineage in store.lineages()] == [NAME]
    invalid = dict(store.invalid_lineages())
    assert set(invalid) == {"b.example", "c.example"}
    assert "cannot be read" in invalid["b.example"]
    assert "not a link into the archive" in invalid["c.example"]
    with pytest.raises(ClientError):
        store.load("b.example")


def test_certificate_that_does_not_parse(store: CertStore) -> None:
    lineage = store.save_new(NAME, **issue().files(), params=params())
    (lineage.archive_dir / "cert1.pem").write_bytes(b"garbage")
    with pytest.raises(ClientError, match="does not load"):
        store.load(NAME)


def test_domains_come_from_the_certificate_when_the_conf_has_none(
    store: CertStore, paths: Paths
) -> None:
    store.save_new(NAME, **issue([NAME, "www.example.com"]).files(), params=params(domains=()))
    assert store.load(NAME).params.domains == (NAME, "www.example.com")


def test_key_matches_certificate_after_every_save(store: CertStore) -> None:
    lineage = store.save_new(NAME, **issue().files(), params=params())
    for _ in range(3):
        key = serialization.load_pem_private_key(lineage.privkey_path.read_bytes(), None)
        assert key.public_key() == lineage.certificate().public_key()
        lineage = store.save_renewal(NAME, **issue().files(), params=params())


# ---------------------------------------------------------------- the lock

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from certmint.client.storage import CertStore, Paths
    root = Path(sys.argv[1])
    with CertStore(Paths(root / "config", root / "work", root / "logs")).lock():
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def test_a_second_run_is_refused_while_one_holds_the_lock(
    store: CertStore, paths: Paths, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ClientError, match=r"another certmint run holds .*\.certmint\.lock"):
            with store.lock():
                pass
        # Writers take the lock themselves, so they are refused too.
        with pytest.raises(ClientError, match="another certmint run holds"):
            store.save_new(NAME, **issue().files(), params=params())
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    with store.lock():
        store.save_new(NAME, **issue().files(), params=params())
    assert (paths.work_dir / ".certmint.lock").exists()
    assert (paths.config_dir / ".certmint.lock").exists()


def test_the_lock_is_shared_by_every_store_of_one_run(paths: Paths) -> None:
    # The CLI makes a fresh CertStore per use; one run must not lock itself out.
    with CertStore(paths).lock():
        with CertStore(paths).lock():
            CertStore(paths).save_new(NAME, **issue().files(), params=params())
        assert CertStore(paths).holds_lock()
    assert not CertStore(paths).holds_lock()


def test_one_directory_for_work_and_config(tmp_path: Path) -> None:
    same = Paths(tmp_path, tmp_path, tmp_path / "logs")
    with CertStore(same).lock():
        pass
