//! A real registry for credential checks: Debian's `docker-registry` (distribution 2.8) on
//! 127.0.0.1 with TLS from a test CA and htpasswd authentication, under our own config (the
//! package's default config listens on all interfaces; it is never used).

use std::{path::PathBuf, process::Command, time::Duration};

pub struct TestRegistry {
    child: Option<std::process::Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Token authentication: the Bearer challenge names this realm (a hostile registry).
    token_realm: Option<String>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (is the tool installed? `make test` installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestRegistry {
    pub fn start(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = |f: &str| dir.path().join(f);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=regcred-test-registry-ca",
            ])
            .arg("-keyout")
            .arg(d("ca.key"))
            .arg("-out")
            .arg(d("ca.crt")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d("tls.key"))
            .arg("-out")
            .arg(d("tls.csr")));
        std::fs::write(
            d("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(d("tls.csr"))
            .arg("-CA")
            .arg(d("ca.crt"))
            .arg("-CAkey")
            .arg(d("ca.key"))
            .arg("-extfile")
            .arg(d("san.ext"))
            .arg("-out")
            .arg(d("tls.crt")));
        std::fs::create_dir_all(d("certs")).unwrap();
        std::fs::copy(d("ca.crt"), d("certs/ca.crt")).unwrap(); // skopeo --cert-dir layout
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut registry = TestRegistry {
            child: None,
            port,
            dir,
            token_realm: None,
        };
        registry.set_password(user, password);
        registry
    }

    /// A registry whose `/v2/` answers 401 with `Bearer realm="<realm>"`: whoever follows the
    /// challenge sends its credentials to `realm`.
    pub fn start_with_token_realm(realm: &str) -> Self {
        let mut registry = Self::start("robot", "unused");
        registry.token_realm = Some(realm.into());
        registry.set_password("robot", "unused");
        registry
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the registry with `user:password` as its only login.
    pub fn set_password(&mut self, user: &str, password: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let d = |f: &str| self.dir.path().join(f);
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        std::fs::write(d("htpasswd"), out.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {crt}, key: {key}}}\nauth:\n  htpasswd: {{realm: regcred-test, path: {htpasswd}}}\n",
            data = d("data").display(),
            port = self.port,
            crt = d("tls.crt").display(),
            key = d("tls.key").display(),
            htpasswd = d("htpasswd").display(),
        );
        let config = match &self.token_realm {
            Some(realm) => config.replace(
                &format!("  htpasswd: {{realm: regcred-test, path: {}}}\n", d("htpasswd").display()),
                &format!(
                    "  token: {{realm: \"{realm}\", service: regcred-test, issuer: regcred-test, rootcertbundle: {}}}\n",
                    d("ca.crt").display()
                ),
            ),
            None => config,
        };
        std::fs::write(d("config.yml"), config).unwrap();
        let log = std::fs::File::create(d("registry.log")).unwrap();
        self.child = Some(
            Command::new("docker-registry")
                .arg("serve")
                .arg(d("config.yml"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry)"),
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the registry did not start: {}",
            std::fs::read_to_string(d("registry.log")).unwrap_or_default()
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
