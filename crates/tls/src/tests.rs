use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::*;

/// A CA and a leaf it signs, written as PEM into `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A CA (`{name}.pem`) and a leaf named `leaf_cn` it signs (`{leaf}.pem`, `{leaf}.key`).
    fn ca_and_leaf(&self, ca: &str, leaf: &str, leaf_cn: &str) -> TlsFiles {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{ca} CA"));
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::OrganizationName, "Turnstile tests");
        params.distinguished_name.push(DnType::CommonName, leaf_cn);
        let leaf_cert = params.signed_by(&leaf_key, &issuer).unwrap();
        TlsFiles {
            cert: self.write(&format!("{leaf}.pem"), &leaf_cert.pem()),
            key: self.write(&format!("{leaf}.key"), &leaf_key.serialize_pem()),
            ca: Some(self.write(&format!("{ca}.pem"), &ca_cert.pem())),
        }
    }
}

fn der_of(path: &Path) -> Vec<u8> {
    pem::certificates(path).unwrap()[0].to_vec()
}

#[test]
fn the_common_name_is_read_from_the_subject_not_the_issuer() {
    let pki = Pki::new();
    let files = pki.ca_and_leaf("root", "app", "billing-worker");
    assert_eq!(common_name(&der_of(&files.cert)).as_deref(), Some("billing-worker"));
    assert_eq!(common_name(&der_of(files.ca.as_ref().unwrap())).as_deref(), Some("root CA"));
}

#[test]
fn a_certificate_without_a_common_name_or_cut_short_has_no_name() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "no cn");
    let der = params.self_signed(&key).unwrap().der().to_vec();
    assert_eq!(common_name(&der), None);
    let pki = Pki::new();
    let named = der_of(&pki.ca_and_leaf("root", "app", "x").cert);
    for cut in [0, 1, 4, named.len() / 2] {
        assert_eq!(common_name(&named[..cut]), None, "cut at {cut}");
    }
}

#[test]
fn loading_names_the_file_that_is_wrong() {
    let pki = Pki::new();
    let good = pki.ca_and_leaf("root", "app", "app");
    let missing = TlsFiles { cert: pki.path("nope.pem"), ..good.clone() };
    let e = ServerTls::load(missing).unwrap_err().to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let garbage = pki.write("garbage.pem", "not a certificate\n");
    let e = ServerTls::load(TlsFiles { cert: garbage.clone(), ..good.clone() }).unwrap_err().to_string();
    assert!(e.contains("garbage.pem") && e.contains("no PEM certificate"), "{e}");
    let e = ServerTls::load(TlsFiles { key: garbage, ..good.clone() }).unwrap_err().to_string();
    assert!(e.contains("garbage.pem") && e.contains("no PEM private key"), "{e}");
    let other = pki.ca_and_leaf("other", "other", "other");
    let e = ServerTls::load(TlsFiles { key: other.key, ..good.clone() }).unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    assert!(ServerTls::load(good).is_ok());
}

#[test]
fn a_failed_reload_keeps_the_old_certificate_and_a_good_one_swaps_it() {
    let pki = Pki::new();
    let files = pki.ca_and_leaf("root", "app", "first");
    let tls = ServerTls::load(files.clone()).unwrap();
    let first = tls.current_certificate();
    std::fs::write(&files.cert, "broken\n").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.current_certificate(), first);
    let next = pki.ca_and_leaf("root2", "next", "second");
    std::fs::copy(&next.cert, &files.cert).unwrap();
    std::fs::copy(&next.key, &files.key).unwrap();
    std::fs::copy(next.ca.as_ref().unwrap(), files.ca.as_ref().unwrap()).unwrap();
    tls.reload().unwrap();
    assert_ne!(tls.current_certificate(), first);
    assert_eq!(common_name(&tls.current_certificate()).as_deref(), Some("second"));
}

#[test]
fn server_names_are_the_host_of_an_address() {
    assert!(matches!(server_name("127.0.0.1:7381").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("[::1]:7381").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(server_name("node-1.example:7381").unwrap(), ServerName::DnsName(_)));
    assert!(server_name("bad name:1").is_err());
}

#[test]
fn a_peer_config_needs_a_ca() {
    let pki = Pki::new();
    let files = pki.ca_and_leaf("root", "app", "app");
    let tls = ServerTls::load(TlsFiles { ca: None, ..files.clone() }).unwrap();
    assert!(matches!(tls.peer_client_config(), Err(TlsError::PeerWithoutCa)));
    assert!(ServerTls::load(files).unwrap().peer_client_config().is_ok());
}
