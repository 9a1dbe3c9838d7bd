//! `medic run`'s unit tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt as _;

use super::{log_filter, since_ms};

#[test]
fn since_takes_a_duration_back_from_now_or_a_utc_time() {
    let now = 1_796_100_000_000;
    assert_eq!(since_ms("2h", now).unwrap(), now - 7_200_000);
    assert_eq!(since_ms("90s", now).unwrap(), now - 90_000);
    let three = 1_796_094_000_000;
    for t in [
        "2026-12-01T03:00:00Z",
        "2026-12-01T03:00:00",
        "2026-12-01 03:00:00",
        "2026-12-01 03:00",
    ] {
        assert_eq!(since_ms(t, now).unwrap(), three, "{t}");
    }
    let e = since_ms("yesterday", now).unwrap_err().to_string();
    assert!(
        e.contains("--since \"yesterday\"") && e.contains("2h") && e.contains("UTC time"),
        "{e}"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What reaches the log with `MEDIC_LOG=user` when medic and hyper both log at trace.
fn logged(user: &str) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::registry()
        .with(log_filter(Some(user)))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
    tracing::subscriber::with_default(subscriber, || {
        tracing::trace!(target: "hyper_util::client::legacy", "POST https://hooks.example.com/T0/B0/SECRET");
        tracing::trace!(target: "aws_sigv4::http_request", "signed with SECRET");
        tracing::trace!(target: "medic_controller::notify", "medic's own trace");
        tracing::warn!(target: "hyper", "hyper warns");
    });
    let text = out
        .0
        .lock()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    text.unwrap_or_default()
}

#[test]
fn a_bare_level_leaves_the_libraries_capped_and_naming_one_lifts_it() {
    let text = logged("trace");
    assert!(text.contains("medic's own trace"), "{text}");
    assert!(text.contains("hyper warns"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    let text = logged("info");
    assert!(!text.contains("medic's own trace"), "{text}");
    let text = logged("info,hyper_util=trace");
    assert!(text.contains("hooks.example.com"), "{text}");
    assert!(!text.contains("signed with"), "{text}");
}
