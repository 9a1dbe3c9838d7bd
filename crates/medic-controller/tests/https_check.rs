//! The `https` service check against a real TLS server (`openssl s_server -www`): a server
//! whose certificate chains to the given CA and is valid for the name answers; a certificate
//! for another name, from another CA, or not trusted by the host is a bad answer, saying so;
//! a server that does not speak TLS, or that accepts and never answers, is a bad answer too;
//! an unreadable CA file asks nothing.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use medic_controller::service_check::check;
use medic_detect::Observation;
use medic_testkit::{Certs, Proc, program, unique_loopback, wait_port};
use medic_topology::{CheckKind, ServiceCheck};

const WITHIN: Duration = Duration::from_secs(2);

fn https(ca: Option<&std::path::Path>, name: Option<&str>) -> ServiceCheck {
    ServiceCheck {
        kind: CheckKind::Https,
        ca_file: ca.map(std::path::Path::to_path_buf),
        server_name: name.map(str::to_owned),
        ..ServiceCheck::default()
    }
}

/// `openssl s_server` with `certs`' certificate at `addr`, answering each request with a
/// status page (HTTP/1.0 200).
fn tls_server(certs: &Certs, addr: SocketAddr) -> Proc {
    let mut cmd = Command::new(program("openssl"));
    cmd.arg("s_server")
        .args(["-accept", &addr.to_string()])
        .arg("-cert")
        .arg(&certs.cert)
        .arg("-key")
        .arg(&certs.key)
        .args(["-www", "-quiet"]);
    let p = Proc::spawn("s_server", cmd, certs.dir.path().join("s_server.log"));
    assert!(
        wait_port(addr, Duration::from_secs(10)),
        "s_server never listened on {addr}: {}",
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_verified_for_its_name_and_ca() {
    let certs = Certs::issue("www.medic.test");
    let addr = SocketAddr::new(unique_loopback().into(), 8443);
    let _server = tls_server(&certs, addr);
    let ask = |how: ServiceCheck| async move { check(addr.ip(), addr.port(), &how, WITHIN).await };

    let (o, detail) = ask(https(Some(&certs.ca), Some("www.medic.test"))).await;
    assert_eq!(o, Observation::Ok, "{detail}");
    assert!(detail.contains("200"), "{detail}");

    // Another name than the certificate's (the default is the address, which it lacks).
    for name in [Some("other.medic.test"), None] {
        let (o, detail) = ask(https(Some(&certs.ca), name)).await;
        assert_eq!(o, Observation::Unhealthy, "{detail}");
        assert!(detail.contains("TLS handshake"), "{detail}");
        assert!(detail.to_lowercase().contains("not valid for"), "{detail}");
    }
    // Another CA; and the host's own roots, which do not know this CA.
    let stranger = Certs::issue("www.medic.test");
    for ca in [Some(stranger.ca.as_path()), None] {
        let (o, detail) = ask(https(ca, Some("www.medic.test"))).await;
        assert_eq!(o, Observation::Unhealthy, "{detail}");
        // (A stranger CA of the same name: the signature does not verify.)
        assert!(
            detail.contains("invalid peer certificate: UnknownIssuer")
                || detail.contains("invalid peer certificate: BadSignature"),
            "{detail}"
        );
    }
    // A CA file medic cannot read: nothing asked, said so.
    let missing = certs.dir.path().join("missing.pem");
    let (o, detail) = ask(https(Some(&missing), Some("www.medic.test"))).await;
    assert_eq!(o, Observation::Unhealthy, "{detail}");
    assert!(
        detail.contains("not asked: cannot read ca_file"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_in_the_clear_is_a_bad_answer_to_an_https_check() {
    // A web server speaking plain HTTP on the port (python's, a real one).
    let ip = unique_loopback();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", &ip.to_string(), "8080"])
        .current_dir(dir.path());
    let server = Proc::spawn("http.server", cmd, dir.path().join("log"));
    let addr = SocketAddr::new(ip.into(), 8080);
    assert!(
        wait_port(addr, Duration::from_secs(10)),
        "http.server never listened: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    let certs = Certs::issue("www.medic.test");
    let how = https(Some(&certs.ca), Some("www.medic.test"));
    let (o, detail) = check(addr.ip(), addr.port(), &how, WITHIN).await;
    assert_eq!(o, Observation::Unhealthy, "{detail}");
    assert!(detail.contains("TLS handshake"), "{detail}");
    // A port that accepts and never says a word: a hung server on a machine that answers
    // (its observers, who only connect, would find it open), not silence.
    let hung = std::net::TcpListener::bind((ip, 8081)).unwrap();
    let at = hung.local_addr().unwrap();
    let (o, detail) = check(at.ip(), at.port(), &how, Duration::from_millis(300)).await;
    assert_eq!(o, Observation::Unhealthy, "{detail}");
    assert!(
        detail.contains("connected, but no TLS handshake"),
        "{detail}"
    );
    // The same port as http: healthy.
    let http = ServiceCheck {
        kind: CheckKind::Http,
        ..ServiceCheck::default()
    };
    let (o, detail) = check(addr.ip(), addr.port(), &http, WITHIN).await;
    assert_eq!(o, Observation::Ok, "{detail}");
}
