//! A private sshd per test, and the users it lets in: what the executor's SSH runs against.

use super::*;

/// A private sshd on its own address, with its own host key, accepting one client key for a
/// dedicated user whose shell is /bin/sh.
#[derive(Debug)]
pub struct Sshd {
    pub addr: SocketAddr,
    /// (directory as the machine sees it, where it really is)
    pub private: Vec<(String, PathBuf)>,
    command: Vec<String>,
    pub user: String,
    /// The client's private key.
    pub client_key: PathBuf,
    /// `known_hosts` line for this server's host key.
    pub known_hosts_line: String,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

/// The user tests log in as. Created once (as root) with shell /bin/sh and uid 0, so playbooks
/// can write where they would on a real machine, without a login profile slowing every command.
pub const TEST_USER: &str = "medic-test";

/// Its home: empty, no profile, so a command over SSH costs milliseconds.
pub const TEST_HOME: &str = "/var/lib/medic-test";

fn ensure_test_user() {
    std::fs::create_dir_all(TEST_HOME).unwrap();
    let entry = Command::new("getent")
        .args(["passwd", TEST_USER])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let wanted = format!("{TEST_USER}:x:0:0::{TEST_HOME}:/bin/sh");
    if entry.trim() == wanted {
        return;
    }
    if !entry.trim().is_empty() {
        // usermod refuses a uid-0 user (every root process "uses" it): recreate it instead.
        let _ = Command::new(program("userdel"))
            .args(["-f", TEST_USER])
            .status();
    }
    let _ = Command::new(program("useradd"))
        .args([
            "-o", "-u", "0", "-g", "0", "-M", "-d", TEST_HOME, "-s", "/bin/sh", "-p", "*",
            TEST_USER,
        ])
        .status();
}

/// A non-root user with passwordless sudo, as EC2's Debian `admin` is.
pub const SUDO_USER: &str = "medic-sudo";
/// A non-root user without sudo rights.
pub const PLAIN_USER: &str = "medic-plain";

fn ensure_user(name: &str, sudo: bool) {
    let home = format!("/var/lib/{name}");
    std::fs::create_dir_all(&home).unwrap();
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let _ = Command::new(program("useradd"))
            .args(["-M", "-d", &home, "-s", "/bin/sh", "-p", "*", name])
            .status();
    }
    if sudo {
        std::fs::create_dir_all("/etc/sudoers.d").unwrap();
        std::fs::write(
            format!("/etc/sudoers.d/{name}"),
            format!("{name} ALL=(ALL) NOPASSWD: ALL\n"),
        )
        .unwrap();
    }
}

pub fn keygen(path: &Path, comment: &str) {
    let st = Command::new(program("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts sshd. With `private_dirs`, it runs in its own mount namespace where each listed
    /// directory is a fresh empty one of its own (the lab's trick, in small), so what a test
    /// writes there over SSH does not touch this machine's.
    pub fn start(ip: Ipv4Addr, private_dirs: &[&str]) -> Sshd {
        ensure_test_user();
        ensure_user(SUDO_USER, true);
        ensure_user(PLAIN_USER, false);
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key, "host");
        let client_key = d.join("client_ed25519");
        keygen(&client_key, "client");
        let auth = d.join("authorized_keys");
        std::fs::copy(d.join("client_ed25519.pub"), &auth).unwrap();
        let addr = SocketAddr::from((ip, 22));
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nMaxSessions 100\nMaxStartups 100:30:200\nAllowUsers {TEST_USER} {SUDO_USER} {PLAIN_USER}\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n",
                host_key.display(),
                d.join("sshd.pid").display(),
                auth.display()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_hosts_line =
            format!("{} {} {}", ip, parts.next().unwrap(), parts.next().unwrap());
        let sshd = program("sshd");
        let mut private = Vec::new();
        let argv: Vec<String> = if private_dirs.is_empty() {
            vec![
                sshd.display().to_string(),
                "-D".into(),
                "-e".into(),
                "-f".into(),
                config.display().to_string(),
            ]
        } else {
            let mut script = String::from("set -e\n");
            for (i, p) in private_dirs.iter().enumerate() {
                let own = d.join(format!("private{i}"));
                std::fs::create_dir_all(&own).unwrap();
                std::fs::create_dir_all(p).unwrap();
                script.push_str(&format!("mount --bind '{}' '{p}'\n", own.display()));
                private.push(((*p).to_owned(), own));
            }
            script.push_str(&format!(
                "exec '{}' -D -e -f '{}'\n",
                sshd.display(),
                config.display()
            ));
            vec![
                program("unshare").display().to_string(),
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "sh".into(),
                "-c".into(),
                script,
            ]
        };
        let proc = spawn_sshd(&argv, d);
        let s = Sshd {
            addr,
            private,
            command: argv,
            user: TEST_USER.to_owned(),
            client_key,
            known_hosts_line,
            proc,
            dir,
        };
        assert!(
            wait_port(addr, Duration::from_secs(10)),
            "sshd did not start:\n{}",
            s.proc.log_text()
        );
        s
    }

    /// Kills sshd (and every session it serves) and starts it again, same key, same address.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn_sshd(&self.command, self.dir.path());
        assert!(
            wait_port(self.addr, Duration::from_secs(10)),
            "sshd did not restart:\n{}",
            self.proc.log_text()
        );
    }

    /// Where `path` (one of the private directories) really is.
    pub fn private_path(&self, path: &str) -> Option<&Path> {
        self.private
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, real)| real.as_path())
    }
}

fn spawn_sshd(argv: &[String], dir: &Path) -> Proc {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    Proc::spawn("sshd", cmd, dir.join("sshd.log"))
}

impl Drop for Sshd {
    /// Daemons a test started over SSH (redis with `daemonize yes`) left sshd's process group:
    /// kill every pid found in a pid file under the private directories.
    fn drop(&mut self) {
        for (_, real) in &self.private {
            for entry in std::fs::read_dir(real).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pid")
                    && let Ok(pid) = std::fs::read_to_string(&path)
                {
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", "--", pid.trim()])
                        .status();
                }
            }
        }
    }
}

impl Sshd {
    /// Writes a known_hosts file holding this server's key and returns its path.
    pub fn known_hosts_file(&self) -> PathBuf {
        let p = self.dir.path().join("known_hosts");
        std::fs::write(&p, format!("{}\n", self.known_hosts_line)).unwrap();
        p
    }
}
