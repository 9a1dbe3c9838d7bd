//! The validator against a file full of mistakes: every message, exactly, in file order.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::PathBuf;

use medic_topology::{Severity, load_topology};

fn fixture(name: &str) -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures")
    .join(name)
}

#[test]
fn every_mistake_is_reported_at_once_with_its_location() {
    let path = fixture("mistakes.yaml");
    let err = load_topology(&path).unwrap_err();
    let file = path.display().to_string();
    let dir = path.parent().unwrap().display().to_string();
    let got: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
    let expected: Vec<String> = [
        "{F}:3:7: name: `Barton_Test` is not a valid name; expected 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'",
        "{F}:5:3: provider.aws.security_groups[0]: `default` is not a security group id; expected sg-...",
        "{F}:5:3: provider.aws.tags.medic:owner: tag keys starting with `medic:` or `aws:` are reserved; expected another key",
        "{F}:12:1: unknown field `colour`, expected one of name, provider, playbooks, ssh, amis, machines, shards, proxies, services, app_proxies, dns, checks, policy, notifications, controller, managed, redis_auth, redis_tls",
        "{F}:17:11: amis[1].name: duplicate AMI `redis` (first defined at line 14); expected unique names",
        "{F}:19:28: amis[1].image_ids.us-east-1: `ami-nothex` is not an AMI id; expected ami- and 8 or 17 hex digits",
        "{F}:21:17: amis[2].definition: no file {D}/../../amis/nothere.yaml; expected an AMI definition (amis/*.yaml)",
        "{F}:23:38: machines[0].ami: AMI `redis` has no image id for region us-east-1; expected amis[].image_ids.us-east-1 to be set",
        "{F}:24:38: machines[1].ami: unknown AMI `redos`; expected one of redis, haproxy",
        "{F}:24:80: machines[1].address: address 10.0.1.11 is also the address of machine `redis1`; expected one address per machine",
        "{F}:25:12: machines[2].name: duplicate machine `redis2` (first defined at line 24); expected unique names",
        "{F}:25:38: machines[2].ami: AMI `redis` has no image id for region us-east-1; expected amis[].image_ids.us-east-1 to be set",
        "{F}:26:42: machines[3].ami: AMI `haproxy` has no image id for region us-east-1; expected amis[].image_ids.us-east-1 to be set",
        "{F}:27:5: machines[4].ami: machine `app` has no `ami`; expected the name of an entry in `amis`, so a lost app machine can be replaced",
        "{F}:27:5: machines[4].instance_type: machine `app` has no `instance_type`; expected an EC2 instance type like m6i.large",
        "{F}:27:28: unknown field `size`, expected one of name, role, ami, instance_type, fallback_instance_types, subnet, address, discover, ssh, server",
        "{F}:29:58: shards[0].replicas[0]: replica and master of shard `r9001` are both on machine `redis1`; expected a replica on another machine",
        "{F}:29:78: shards[0].maxmemory: \"512mb\\nslaveof 10.0.0.9 6379\" is not a size; expected digits and an optional unit (b, k, kb, m, mb, g, gb), e.g. 512mb",
        "{F}:30:12: shards[1].name: shard `r9002` has no frontend on the proxies; expected an entry `{listen: PORT, shard: r9002}` in proxies.frontends",
        "{F}:30:39: shards[1].master: unknown machine `redis3`; expected one of redis1, redis2 (machines with role redis)",
        "{F}:30:58: shards[1].replicas[0]: machine `haproxy1` has role haproxy; expected a machine with role redis",
        "{F}:31:5: shards[2].replicas: shard `r9001` has no replica; expected at least one machine (a master alone cannot fail over)",
        "{F}:31:12: shards[2].name: duplicate shard `r9001` (first defined at line 29); expected unique names",
        "{F}:31:25: shards[2].port: port 0; expected a port from 1 to 65535",
        "{F}:33:14: warning: proxies.machines: only one proxy machine: clients lose everything routed through the proxies while it is replaced; expected two",
        "{F}:34:37: proxies.runtime_api.socket: \"/run/x.sock level admin\\nstats socket ipv4@0.0.0.0:9999\" is not a plain absolute path; expected letters, digits, `/`, `.`, `_` and `-` only, e.g. /run/haproxy/admin.sock",
        "{F}:36:16: proxies.frontends[0].listen: port 8001 on machine `haproxy1` is already used by the runtime API; expected a free port for the frontend of shard `r9001`",
        "{F}:37:29: proxies.frontends[1].shard: unknown shard `r9003`; expected one of r9001, r9002",
        "{F}:42:13: app_proxies[0].backup: `haproxy9` is not a proxy machine; expected one of haproxy1",
        "{F}:48:8: dns.ttl: TTL -5 is out of range; expected 0 to 2147483647 seconds (Route 53's range; 60 is usual for failover)",
        "{F}:51:14: dns.records[1].name: duplicate record `haproxy1.barton.example.com.` (first defined at line 50); expected unique names",
        "{F}:51:55: dns.records[1].machines[0]: unknown machine `haproxy2`; expected one of redis1, redis2, haproxy1, app",
        "{F}:52:7: dns.records[2].machines: no machines: the record would have no value; expected at least one machine",
        "{F}:52:14: dns.records[2].name: `redis.example.org` is outside the zone barton.example.com; expected a name ending in .barton.example.com",
        "{F}:54:10: checks.redis.fall: fall 0 can never mark a node down; expected 1 or more",
        "{F}:54:10: checks.redis.rise: rise 0 can never mark a node up; expected 1 or more",
        "{F}:54:10: checks.redis.timeout: timeout 250ms is not shorter than interval 200ms; expected a timeout below the interval, or checks pile up",
        "{F}:56:27: policy.remediation[1]: listed twice; expected each remedy once",
        "{F}:58:20: notifications[0].webhook.url: `ftp://hooks.example.com/x` is not an http(s) URL",
        "{F}:60:11: warning: controller.listen: 0.0.0.0:7600 is not a loopback address: the API is reachable from other machines; expected 127.0.0.1 unless a TLS proxy fronts it",
        "{F}:62:11: controller.cluster.etcd: no etcd endpoint: expected a list of etcd members' client addresses, e.g. [10.0.0.5:2379, 10.0.0.6:2379, 10.0.0.7:2379]",
        "{F}:63:12: controller.cluster.lease: 1s 500ms is out of range: expected whole seconds from 2s to 60s (the leader stops acting 1 s before its lease could expire)",
        "{F}:64:13: controller.cluster.member: `a b`: expected a name of letters, digits, `-`, `_` or `.`",
        "{F}:66:41: redis_auth.medic.password.file: secrets/medic is not an absolute path; expected e.g. /etc/medic/secrets/redis-medic",
        "{F}:67:23: redis_auth.replication.user: \"medic\" is named twice; expected one entry per user",
        "{F}:69:14: redis_auth.clients[0].user: \"app x\" is not a user name medic can give; expected letters, digits, `_`, `-` or `.` (and not `default`, which medic turns off)",
        "{F}:69:33: redis_auth.clients[0].password: no `file` or `env`; expected where the password is kept (never the password itself)",
        "{F}:69:44: redis_auth.clients[0].rules: \">hunter2\" is not a key, channel or command rule; expected redis ACL rules for keys (~), channels (&) and commands (+/-), e.g. \"~* &* +@all -@dangerous\" (the password comes from `password`)",
        "{F}:71:9: redis_tls.name: \"10.0.0.1\" is not a DNS name; expected the name the servers' certificate was issued for, e.g. redis.internal",
        "{F}:73:9: redis_tls.cert: tls/redis.pem is not an absolute path; expected a PEM file on the controller's host, e.g. /etc/medic/tls/redis-cert.pem",
    ]
    .iter()
    .map(|l| l.replace("{F}", &file).replace("{D}", &dir))
    .collect();
    assert_eq!(got, expected);
    assert_eq!(
        err.errors().count(),
        expected.len() - 2,
        "two of them are warnings"
    );
    assert_eq!(
        err.to_string(),
        format!("{} errors in the topology", expected.len() - 2)
    );
    assert!(
        err.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .all(|d| d.to_string().contains(": warning: "))
    );
}

#[test]
fn the_examples_are_valid() {
    for name in ["barton.yaml", "lab.yaml", "static.yaml"] {
        let path = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../examples")
        .join(name);
        let loaded =
            load_topology(&path).unwrap_or_else(|e| panic!("{name}: {:#?}", e.diagnostics));
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
        assert_eq!(loaded.topology.name.value, "barton");
        assert_eq!(loaded.topology.machines.len(), 6);
    }
}

/// A service's mistakes (examples/domino.yaml, each line changed), each named with its field.
#[test]
fn a_service_s_mistakes_are_named_with_their_fields() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/domino.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "standbys: [web2]",
            "standbys: [web1]",
            "services[0].standbys[0]: machine `web1` is the primary of service `www`",
        ),
        (
            "standbys: [web2]",
            "standbys: [monitor]",
            "services[0].standbys[0]: machine `monitor` has role monitor; expected a machine with role service",
        ),
        (
            "check: {kind: http, path: /health",
            "check: {kind: tcp, path: /health",
            "services[0].check.path: `path` is for an http or https check",
        ),
        (
            "check: {kind: http, path: /health",
            "check: {kind: http, user: medic, path: /health",
            "services[0].check.user: `user` is for a postgres check; expected `kind: postgres`",
        ),
        (
            "check: {kind: http, path: /health",
            "check: {kind: http, ca_file: /etc/ca.pem, path: /health",
            "services[0].check.ca_file: `ca_file` is for an https check; expected `kind: https`",
        ),
        (
            "check: {kind: http, path: /health",
            "check: {kind: https, ca_file: ca.pem, path: /health",
            "services[0].check.ca_file: `ca.pem`: expected an absolute path on the controller's host",
        ),
        (
            "check: {kind: http, path: /health",
            "check: {kind: https, server_name: 'www domino', path: /health",
            "services[0].check.server_name: `www domino`: expected a DNS name or an address",
        ),
        (
            "check: {kind: http, path: /health, status: 200, body: ok,",
            "check: {kind: postgres, database: 'two words', password_file: pw,",
            "services[0].check.database: `two words`: expected a PostgreSQL database name",
        ),
        (
            "check: {kind: http, path: /health, status: 200, body: ok,",
            "check: {kind: postgres, password_file: pw,",
            "services[0].check.password_file: `pw`: expected an absolute path on the controller's host",
        ),
        (
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}",
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}\n    more_checks: [{kind: tcp, port: 8983, path: /}]",
            "services[0].more_checks[0].path: `path` is for an http or https check",
        ),
        (
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}",
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}\n    more_checks: [{kind: postgres}, {kind: postgres, port: 5433}]",
            "services[0].more_checks[1].kind: a second postgres check; expected one per service",
        ),
        (
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}",
            "body: ok, interval: 500ms, timeout: 400ms, fall: 3, rise: 2}\n    more_checks: [{kind: command}]",
            "services[0].more_checks[0].command: no command; expected the shell command",
        ),
        (
            "status: 200, body",
            "status: 700, body",
            "services[0].check.status: 700 is not an HTTP status",
        ),
        (
            "timeout: 400ms, fall",
            "timeout: 900ms, fall",
            "services[0].check.timeout: timeout 900ms is not shorter than interval 500ms",
        ),
        (
            "name: www.domino.lab",
            "name: www.example.org",
            "services[0].dns.name: `www.example.org` is outside the zone domino.lab",
        ),
        (
            "    failback: manual",
            "    failback: manual\n    rejoin: {data_dir: /var/lib/pg, bin_dir: /usr/lib/postgresql/15/bin}",
            "services[0].rejoin: rejoin makes a PostgreSQL server a standby again; expected a check (or one of more_checks) of kind postgres",
        ),
        (
            "    failback: manual",
            "    failback: manual\n    more_checks: [{kind: postgres}]\n    rejoin: {data_dir: pg, bin_dir: /usr/lib/postgresql/15/bin}",
            "services[0].rejoin.data_dir: `pg` is not a plain absolute path",
        ),
        (
            "    failback: manual",
            "    failback: manual\n    more_checks: [{kind: postgres}]\n    rejoin: {data_dir: /var/lib/pg, bin_dir: /usr/bin, os_user: 'pg; rm'}",
            "services[0].rejoin.os_user: `pg; rm` is not a plain user name",
        ),
        (
            "    failback: manual",
            "    failback: manual\n    more_checks: [{kind: postgres}]\n    rejoin: {data_dir: /var/lib/pg, bin_dir: /usr/bin, method: copy}",
            ": unknown variant `copy`, expected one of rewind, rewind_or_copy",
        ),
        (
            "    failback: manual",
            "    failback: manual\n    more_checks: [{kind: postgres}]\n    standbys_read_only: true\n    rejoin: {data_dir: /var/lib/pg, bin_dir: /usr/bin}",
            "services[0].rejoin: with `standbys_read_only: true` medic never promotes",
        ),
        (
            "on_promote: primary-include",
            "on_promote: Primary_Include",
            "services[0].hooks.on_promote: `Primary_Include` is not a valid name",
        ),
        (
            "    port: 80\n",
            "    port: 80\n    proxy: {listen: 8080, mode: http}\n",
            "services[0].proxy: no proxy machine to route the service through; expected `proxies.machines`",
        ),
        (
            "    port: 80\n",
            "    port: 80\n    proxy: {listen: 8080, mode: udp}\n",
            ": unknown variant `udp`, expected one of tcp, http",
        ),
        (
            "check: {kind: http, path: /health",
            "proxy: {listen: 8080, mode: http}\n    check: {kind: https, path: /health",
            "services[0].proxy.mode: HTTP mode sends plain HTTP to the servers, but the service's check says they speak TLS",
        ),
        (
            "    mode: primary_standby\n",
            "    mode: active_active\n",
            "services[0].proxy: an active_active service is routed through the proxies",
        ),
        (
            "    mode: primary_standby\n",
            "    mode: active_active\n",
            "services[0].dns: the record follows the primary; an active_active service has none",
        ),
        (
            "    mode: primary_standby\n",
            "    mode: active_active\n",
            "services[0].hooks.on_demote: an active_active service demotes nothing",
        ),
    ];
    for (from, to, want) in cases {
        assert!(text.contains(from), "{from}");
        let file = dir.path().join("domino.yaml");
        std::fs::write(
            &file,
            text.replace(from, to)
                .replace("../amis", &root.join("amis").display().to_string()),
        )
        .unwrap();
        let err = load_topology(&file).unwrap_err();
        let msgs: Vec<String> = err
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        assert!(msgs.iter().any(|m| m.starts_with(want)), "{to}: {msgs:?}");
        assert!(
            err.diagnostics.iter().all(|d| d.pos.line > 0),
            "located: {msgs:?}"
        );
    }
}

/// A service routed through proxies: valid beside them, and its frontend's port is the
/// proxies' own (two services, or the runtime API, cannot share it).
#[test]
fn a_service_s_frontend_on_the_proxies_claims_its_port_there() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/domino.yaml"))
        .unwrap()
        .replace("../amis", &root.join("amis").display().to_string())
        .replace(
            "    port: 80\n",
            "    port: 80\n    proxy: {listen: 8080, mode: http}\n",
        );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domino.yaml");
    let with = |api: u16| {
        text.replace(
            "  - {name: monitor, role: monitor}\n",
            &format!("  - {{name: lb1, role: haproxy, ami: web}}\n  - {{name: monitor, role: monitor}}\nproxies: {{machines: [lb1], runtime_api: {{port: {api}}}, frontends: []}}\n"),
        )
    };
    std::fs::write(&file, with(9999)).unwrap();
    let loaded = load_topology(&file).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
    assert_eq!(loaded.topology.proxy_listens(), [8080]);
    std::fs::write(&file, with(8080)).unwrap();
    let err = load_topology(&file).unwrap_err();
    let msgs: Vec<String> = err
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "services[0].proxy.listen: port 8080 on machine `lb1` is already used by the runtime API"
        )),
        "{msgs:?}"
    );
}

/// The moving address of examples/sounz.yaml: an Elastic IP only on aws, and only as EC2
/// writes its allocation ids; on aws the address itself is accepted (medic moves it).
#[test]
fn a_moving_address_s_elastic_ip_is_for_aws_and_well_formed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/sounz.yaml"))
        .unwrap()
        .replace("../amis", &root.join("amis").display().to_string());
    let start = text.find("provider:\n").unwrap();
    let end = text.find("playbooks:").unwrap();
    let mut aws = text.clone();
    aws.replace_range(
        start..end,
        "provider:\n  aws:\n    region: us-east-1\n    subnets: [subnet-0a1b2c3d4e5f60718]\n    security_groups: [sg-0123456789abcdef0]\n    key_pair: medic\n",
    );
    let aws = aws
        .replace("ami: web}", "ami: web, instance_type: t3.small}")
        .replace(
            "/web.yaml\n",
            "/web.yaml\n    image_ids: {us-east-1: ami-0a1b2c3d4e5f60718}\n",
        );
    let dir = tempfile::tempdir().unwrap();
    let errors = |text: &str| -> Vec<String> {
        let file = dir.path().join("sounz.yaml");
        std::fs::write(&file, text).unwrap();
        match load_topology(&file) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect(),
        }
    };
    let with = |t: &str, e: &str| {
        t.replace(
            "interface: eth0}",
            &format!("interface: eth0, elastic_ip: {e}}}"),
        )
    };
    assert_eq!(errors(&text), Vec::<String>::new());
    assert_eq!(
        errors(&aws),
        Vec::<String>::new(),
        "a moving address on aws"
    );
    assert_eq!(
        errors(&with(&aws, "eipalloc-0123456789abcdef0")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&with(&aws, "eipalloc-12345678")),
        Vec::<String>::new()
    );
    // Two subnets: machines of a role are spread over them, an address cannot follow.
    let spread = aws.replace(
        "subnets: [subnet-0a1b2c3d4e5f60718]",
        "subnets: [subnet-0a1b2c3d4e5f60718, subnet-0f1e2d3c4b5a69788]",
    );
    let split = errors(&spread);
    assert!(
        split.iter().any(|m| m.starts_with("services[0].address.ip: an address that moves between EC2 instances is a secondary private IP of one subnet")
            && m.contains("slayer in subnet-0a1b2c3d4e5f60718, megadeth in subnet-0f1e2d3c4b5a69788")),
        "{split:?}"
    );
    let pinned = spread.replace(
        "ami: web, instance_type",
        "ami: web, subnet: subnet-0f1e2d3c4b5a69788, instance_type",
    );
    assert_eq!(
        errors(&pinned),
        Vec::<String>::new(),
        "both machines in one subnet"
    );
    let bad = errors(&with(&aws, "52.1.2.3"));
    assert!(
        bad.iter().any(|m| m.starts_with(
            "services[0].address.elastic_ip: `52.1.2.3` is not an Elastic IP allocation id"
        )),
        "{bad:?}"
    );
    let lab = errors(&with(&text, "eipalloc-12345678"));
    assert!(
        lab.iter().any(|m| m.starts_with(
            "services[0].address.elastic_ip: an Elastic IP moves only on the aws provider"
        )),
        "{lab:?}"
    );
}

/// A rejoin step whose timeout leaves no room for a standby-mode recovery (up to 5 minutes)
/// before the rewind is a warning; the default is not.
#[test]
fn a_rejoin_timeout_shorter_than_a_recovery_in_standby_mode_is_a_warning() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/domino.yaml"))
        .unwrap()
        .replace("../amis", &root.join("amis").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domino.yaml");
    for (timeout, warned) in [("", false), (", timeout: 2m", true)] {
        std::fs::write(
            &file,
            text.replace(
                "    failback: manual",
                &format!("    failback: manual\n    more_checks: [{{kind: postgres}}]\n    rejoin: {{data_dir: /var/lib/pg, bin_dir: /usr/bin{timeout}}}"),
            ),
        )
        .unwrap();
        let loaded = load_topology(&file).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
        let said: Vec<String> = loaded
            .warnings
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        assert_eq!(
            said.iter()
                .any(|w| w.starts_with("services[0].rejoin.timeout: 2m may not leave room")),
            warned,
            "{said:?}"
        );
    }
}

#[test]
fn spares_are_for_roles_medic_launches_and_configures() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("examples/lab.yaml"))
        .unwrap()
        .replace("../amis", &root.join("amis").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let errors = |spares: &str| -> Vec<String> {
        let file = dir.path().join("lab.yaml");
        let t = text.replace(
            "  boot_timeout: 5m\n",
            &format!("  boot_timeout: 5m\n{spares}"),
        );
        std::fs::write(&file, t).unwrap();
        match load_topology(&file) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| format!("{}:{}: {}", d.pos.line, d.path, d.message))
                .collect(),
        }
    };
    assert_eq!(
        errors("  spares: {redis: 1, haproxy: 2}\n  spare_state: stopped\n"),
        Vec::<String>::new()
    );
    assert_eq!(
        errors("  spares: {redis: 9, monitor: 1}\n"),
        [
            "80:policy.spares.redis: 9 spares; expected 0 to 5",
            "80:policy.spares.monitor: medic does not configure machines of role monitor; expected redis, haproxy or app",
        ]
    );
    assert_eq!(
        errors("  spares: {radish: 1}\n").len(),
        1,
        "an unknown role is refused"
    );
    assert_eq!(
        errors("  spare_state: asleep\n").len(),
        1,
        "an unknown state is refused"
    );
}
