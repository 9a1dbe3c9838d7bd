//! The status page as a browser sees it: headless Chromium renders it (`?snapshot`: drawn once
//! from the API, as the live page first draws it) and gives the DOM, its text or a
//! screenshot; and the event stream the live page then follows, read as it reads it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Headless Chromium on the status page: `what` is `--dump-dom` or `--screenshot=FILE`.
fn chromium(port: u16, what: &str) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let out = headless(&profile, what)
        // Drawn once: a page that keeps its event stream open never ends loading for a
        // headless browser (its virtual time waits for open requests).
        .arg(format!("http://127.0.0.1:{port}/?snapshot"))
        .output()
        .expect("chromium (scripts/deps installs it)");
    out.stdout
}

/// Headless Chromium with a profile of its own in `profile`, to do `what`; the page's
/// address is to be added.
fn headless(profile: &tempfile::TempDir, what: &str) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1100,1900",
        "--virtual-time-budget=3000",
        what,
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    c
}

/// The live page in headless Chromium, started now with `?until=SELECTOR`: it follows the
/// event stream until it has drawn an element matching SELECTOR, then closes the stream (and
/// so finishes loading) and says by what it drew it.
pub struct LivePage {
    child: std::process::Child,
    /// Its standard output, read as it comes (a DOM larger than a pipe holds would
    /// otherwise stop it).
    out: Option<std::thread::JoinHandle<String>>,
    _profile: tempfile::TempDir,
}

impl LivePage {
    pub fn open(port: u16, selector: &str) -> LivePage {
        let profile = tempfile::tempdir().unwrap();
        let encoded: String = selector
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let mut child = headless(&profile, "--dump-dom")
            .arg(format!("http://127.0.0.1:{port}/?until={encoded}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium (scripts/deps installs it)");
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        LivePage {
            child,
            out: Some(out),
            _profile: profile,
        }
    }

    /// Its DOM once it has finished, within `within`; panics (the browser killed) if not.
    pub fn dom(mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(done) = self.child.try_wait().unwrap() {
                let out = self.out.take().unwrap().join().unwrap();
                assert!(done.success(), "chromium ended with {done}: {out}");
                return out;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the live page did not finish within {within:?} (its stream still open)");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LivePage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's DOM once its script has run.
pub fn page_dom(port: u16) -> String {
    String::from_utf8_lossy(&chromium(port, "--dump-dom")).into_owned()
}

/// The page as text: tags out, whitespace folded: what a reader sees, in order.
pub fn page_text(port: u16) -> String {
    let html = page_dom(port);
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// With `MEDIC_SCREENSHOTS=DIR`, the page as Chromium draws it, into DIR/`name`.png (how the
/// screenshots in docs/ are made; a relative DIR is the repository's).
pub fn screenshot(port: u16, name: &str) {
    let Some(dir) = std::env::var_os("MEDIC_SCREENSHOTS") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let file = root.join(dir).join(format!("{name}.png"));
    chromium(port, &format!("--screenshot={}", file.display()));
    assert!(file.is_file(), "no screenshot at {}", file.display());
}

/// One server-sent event: when it came, its name, its data.
pub type Event = (Instant, String, serde_json::Value);

/// `GET /api/stream` read on a thread as it comes, every event kept.
pub struct EventStream {
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The answer's first line (`HTTP/1.1 200 OK`), once read.
    pub status_line: Arc<Mutex<String>>,
    socket: TcpStream,
}

impl EventStream {
    pub fn open(port: u16) -> EventStream {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let status_line = Arc::new(Mutex::new(String::new()));
        let (kept, first) = (events.clone(), status_line.clone());
        let socket = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut head = String::new();
            if r.read_line(&mut head).is_err() {
                return;
            }
            *first.lock().unwrap() = head.trim_end().to_owned();
            let mut name = String::new();
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                let l = line.trim_end();
                if let Some(n) = l.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = l.strip_prefix("data: ")
                    && let Ok(v) = serde_json::from_str(d)
                {
                    kept.lock().unwrap().push((Instant::now(), name.clone(), v));
                }
                line.clear();
            }
        });
        EventStream {
            events,
            status_line,
            socket,
        }
    }

    /// The answer's first line, once it came (within 5 s).
    pub fn status(&self) -> String {
        medic_testkit::wait_until(
            "the stream's answer",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                let l = self.status_line.lock().unwrap().clone();
                if l.is_empty() { Err(l) } else { Ok(l) }
            },
        )
    }

    /// Closes the connection, as a browser closing its tab.
    pub fn close(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Waits until an event satisfies `ok`; panics after `within` with the last event seen.
    pub fn wait(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&str, &serde_json::Value) -> bool,
    ) {
        medic_testkit::wait_until(what, within, Duration::from_millis(50), || {
            let ev = self.events.lock().unwrap();
            if ev.iter().any(|(_, n, v)| ok(n, v)) {
                Ok(())
            } else {
                Err(format!(
                    "{} events; the last: {:?}",
                    ev.len(),
                    ev.last().map(|(_, n, v)| format!(
                        "{n}: {}",
                        v.to_string().chars().take(300).collect::<String>()
                    ))
                ))
            }
        });
    }
}
