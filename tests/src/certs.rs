//! Test certificates made with the `openssl` command: a CA, a server
//! certificate for 127.0.0.1/localhost and client certificates, all ECDSA
//! P-256 PEM files in a directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA's files, able to sign more certificates.
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A signed certificate and its key.
pub struct Signed {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed CA named `name` in `dir` (`<name>.pem`, `<name>.key`).
pub fn ca(dir: &Path, name: &str) -> Ca {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &cert];
    args.extend(EC);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
    Ca { cert: dir.join(cert), key: dir.join(key) }
}

impl Ca {
    /// A certificate for `cn` signed by this CA, for servers (with
    /// 127.0.0.1 and localhost as names) or for clients.
    pub fn sign(&self, dir: &Path, name: &str, cn: &str, server: bool) -> Signed {
        let (cert, key, csr, ext) = (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        let usage = if server { "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1" } else { "extendedKeyUsage=clientAuth" };
        std::fs::write(dir.join(&ext), format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{usage}\n")).expect("ext file");
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr];
        args.extend(EC);
        openssl(dir, &args);
        let (ca_cert, ca_key) = (self.cert.to_string_lossy().into_owned(), self.key.to_string_lossy().into_owned());
        openssl(dir, &[
            "x509", "-req", "-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2", "-extfile", &ext, "-out", &cert,
        ]);
        Signed { cert: dir.join(cert), key: dir.join(key) }
    }
}
