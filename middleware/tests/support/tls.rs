//! Certificates made by the test: a CA, a server certificate for 127.0.0.1/localhost
//! (and one also usable as a client, for cluster nodes and replicas) and a client
//! certificate signed by it, a server certificate for another host signed
//! by it, and a second, unrelated CA with a server certificate of its own. Written as
//! PEM files into a directory removed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The least-privilege ACL rules documented in `docs/sidecar.md` and `RedisStore`'s
/// module docs: the library's and the sidecar's TLS/ACL tests both hold a user to exactly
/// these.
pub const MINIMAL_ACL: &[&str] = &[
    "resetkeys",
    "~tollgate:*",
    "resetchannels",
    "-@all",
    "+evalsha",
    "+script|load",
    "+time",
    "+mget",
    "+set",
    "+ping",
];

/// What a Redis Cluster client needs beyond [`MINIMAL_ACL`] (documented with it).
pub const CLUSTER_ACL: &[&str] = &["+cluster|slots"];

/// What the store needs on a primary found through Redis Sentinel, beyond
/// [`MINIMAL_ACL`] (documented with it).
pub const SENTINEL_ACL: &[&str] = &["+role"];

/// A user on the sentinels themselves, for the store's lookups (documented with
/// [`MINIMAL_ACL`]).
pub const SENTINEL_USER_ACL: &[&str] = &["resetchannels", "-@all", "+sentinel|masters", "+role"];

pub struct Pki {
    pub dir: PathBuf,
}

/// A CA: its parameters and key, to sign with.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

fn ca(name: &str) -> (Ca, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("self-signed CA").pem();
    (Ca { params, key }, pem)
}

/// A leaf certificate for `names`, signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str], usage: &[ExtendedKeyUsagePurpose]) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = usage.to_vec();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn generate() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki { dir };
        let (test_ca, ca_pem) = ca("Tollgate test CA");
        let (other_ca, other_pem) = ca("Unrelated CA");
        pki.write("ca.pem", &ca_pem);
        pki.write("other-ca.pem", &other_pem);
        let server = [ExtendedKeyUsagePurpose::ServerAuth];
        // A cluster node is also a client of its peers on the cluster bus, where Redis
        // always asks for a client certificate (whatever `tls-auth-clients` says), and
        // a replica or sentinel one of its primary.
        let node = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let loopback = ["localhost", "127.0.0.1"];
        for (name, ca, names, usage) in [
            ("server", &test_ca, &loopback[..], &server[..]),
            ("node", &test_ca, &loopback[..], &node[..]),
            ("other-server", &other_ca, &loopback[..], &server[..]),
            (
                "wrong-host",
                &test_ca,
                &["redis.example.invalid"][..],
                &server[..],
            ),
        ] {
            let (cert, key) = leaf(ca, names, usage);
            pki.write(&format!("{name}.pem"), &cert);
            pki.write(&format!("{name}-key.pem"), &key);
        }
        let (cert, key) = leaf(
            &test_ca,
            &["tollgate"],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        pki.write("client.pem", &cert);
        pki.write("client-key.pem", &key);
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).expect("write pem");
    }

    /// The path of one of the files (`ca.pem`, `server.pem`, `client-key.pem`, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read pem")
    }

    /// `redis-server` arguments serving the certificate `server` (`server`, `node`,
    /// `other-server`, `wrong-host`) and, with `auth_clients`, requiring a client
    /// certificate from the test CA.
    pub fn server_args(&self, server: &str, auth_clients: bool) -> Vec<String> {
        let p = |name: &str| path_str(&self.path(name));
        vec![
            "--tls-cert-file".into(),
            p(&format!("{server}.pem")),
            "--tls-key-file".into(),
            p(&format!("{server}-key.pem")),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ]
    }
}

pub fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_owned()
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
