//! The draft's unit tests: what it maps, assumes and leaves out.

use super::*;
use crate::monitrc::parse;

fn opts() -> Options {
    Options {
        source: "monitrc".into(),
        name: None,
        playbooks: "/usr/share/medic/playbooks".into(),
    }
}

fn has(d: &Draft, verdict: Verdict, part: &str) -> bool {
    d.notes
        .iter()
        .any(|n| n.verdict == verdict && n.text.contains(part))
}

#[test]
fn a_hosts_file_gives_names_and_aliases_their_first_address() {
    let h = parse_hosts("# c\n10.0.0.1 a a.example # x\n::1 b\n10.0.0.9 a\nnot-an-ip c\n");
    assert_eq!(
        h.get("a").map(ToString::to_string).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        h.get("a.example").map(ToString::to_string).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(h.get("b").map(ToString::to_string).as_deref(), Some("::1"));
    assert!(!h.contains_key("c"));
}

#[test]
fn what_the_file_does_not_say_is_left_to_the_operator() {
    let rc = parse(
        "check host r1 with address 10.0.0.1\n if failed port 6379 protocol redis then alert\n\
         check host hp with address 10.0.0.2\n if failed port 80 then exec \"failover haproxy hp\"\n\
         \x20if failed port 81 then exec \"failover haproxy hp\"\n\
         check host db with address 10.0.0.3\n if failed port 5432 then alert\n",
    )
    .unwrap();
    let d = draft(&rc, &BTreeMap::new(), &opts());
    // Two frontend ports for one shard: not guessed.
    assert!(
        has(&d, Verdict::NotMapped, "2 port(s) tested for 1 shard(s)"),
        "{:?}",
        d.notes
    );
    assert!(d.yaml.contains("    []  # TODO"), "{}", d.yaml);
    // One redis host: no replica to promote, said so.
    assert!(has(
        &d,
        Verdict::Assumed,
        "with no replica: a failover has nothing to promote"
    ));
    // A host that is neither: pointed at services.
    assert!(has(
        &d,
        Verdict::NotMapped,
        "check host db: neither a redis server"
    ));
    assert!(!d.yaml.contains("name: db"));
    // No `set daemon`: monit's usual cycle, said so; no common domain: a plain name.
    assert!(has(
        &d,
        Verdict::Assumed,
        "no `set daemon`: checks every 30s"
    ));
    assert!(d.yaml.contains("\nname: imported\n"), "{}", d.yaml);
    // A timeout below the interval, and monit's default of 5 s.
    assert!(
        d.yaml
            .contains("redis: {interval: 30s, timeout: 5000ms, fall: 1, rise: 2}"),
        "{}",
        d.yaml
    );
}

#[test]
fn only_what_medic_does_is_mapped() {
    let rc = parse(
        "set daemon 10\n\
         check host Redis_1.example.com with address 10.0.0.1 every 2 cycles\n\
         \x20 if failed port 6379 protocol redis for 2 cycles then exec \"/sbin/failover r1\"\n\
         \x20    else if succeeded then exec \"/sbin/failback r1\"\n\
         \x20 if failed port 22 protocol ssh for 10 cycles then alert\n\
         \x20 if failed host 10.0.0.9 port 6380 protocol redis then exec \"/sbin/page\"\n\
         check host lb-haproxy with address 10.0.0.2\n\
         \x20 if failed port 7000 protocol redis then exec \"/sbin/page-me\"\n\
         check host monitor with address 10.0.0.3\n\
         \x20 if failed port 6379 protocol redis then alert\n\
         check host 123 with address 10.0.0.4\n\
         \x20 if failed port 6379 protocol redis then alert\n",
    )
    .unwrap();
    let d = draft(&rc, &BTreeMap::new(), &opts());
    let y = &d.yaml;
    // Names made valid, said so; never the monitor's; quoted where YAML would misread.
    assert!(
        y.contains("  - {name: redis-1, role: redis, address: 10.0.0.1}"),
        "{y}"
    );
    assert!(has(
        &d,
        Verdict::Assumed,
        "check host Redis_1.example.com is machine redis-1"
    ));
    assert!(
        y.contains("  - {name: host-monitor, role: redis, address: 10.0.0.3}"),
        "{y}"
    );
    assert!(
        y.contains("  - {name: \"123\", role: redis, address: 10.0.0.4}"),
        "{y}"
    );
    assert!(
        y.contains("  - {name: monitor, role: monitor, address: 127.0.0.1}"),
        "{y}"
    );
    // An HAProxy tested with protocol redis stays an HAProxy; its port is no shard.
    assert!(
        y.contains("  - {name: lb-haproxy, role: haproxy, address: 10.0.0.2}"),
        "{y}"
    );
    assert!(!y.contains("r7000"), "{y}");
    // Another host's test is not this machine's shard.
    assert!(!y.contains("r6380"), "{y}");
    assert!(has(
        &d,
        Verdict::NotMapped,
        "it tests another host (10.0.0.9)"
    ));
    // Only a failover script is medic's recovery; the rest is said to be left out.
    assert!(has(
        &d,
        Verdict::Mapped,
        "`exec \"/sbin/failover r1\"` → medic's own recovery (`medic plan FILE --lose redis-1`"
    ));
    assert!(has(
        &d,
        Verdict::NotMapped,
        "`exec \"/sbin/page-me\"`: medic runs no script of yours"
    ));
    assert!(has(
        &d,
        Verdict::NotMapped,
        "`else if succeeded then exec \"/sbin/failback r1\"`: medic has no use for it"
    ));
    // The cadence: 10 s × every 2 cycles; fall from the mapped tests only (not ssh's 10).
    assert!(
        y.contains("redis: {interval: 20s, timeout: 5000ms, fall: 2, rise: 2}"),
        "{y}"
    );
    assert!(has(
        &d,
        Verdict::Mapped,
        "`every 2 cycles` (check host Redis_1.example.com)"
    ));
}

#[test]
fn values_from_the_file_are_quoted_when_yaml_would_misread_them() {
    let rc = parse(
        "check host r1 with address \"db: one\"\n if failed port 1 protocol redis then alert\n",
    )
    .unwrap();
    let d = draft(
        &rc,
        &BTreeMap::new(),
        &Options {
            name: Some("on".into()),
            playbooks: "/my playbooks".into(),
            ..opts()
        },
    );
    assert!(d.yaml.contains("\nname: \"on\"\n"), "{}", d.yaml);
    assert!(
        d.yaml.contains("\nplaybooks: \"/my playbooks\"\n"),
        "{}",
        d.yaml
    );
    assert!(
        d.yaml
            .contains("address: \"TODO: the address of db: one\"}"),
        "{}",
        d.yaml
    );
}

#[test]
fn a_short_cycle_keeps_the_timeout_below_the_interval() {
    let rc = parse(
        "set daemon 2\ncheck host r1 with address 10.0.0.1\n if failed port 6379 protocol redis with timeout 10 seconds 3 times within 4 cycles then alert\n",
    )
    .unwrap();
    let d = draft(
        &rc,
        &BTreeMap::new(),
        &Options {
            name: Some("x".into()),
            ..opts()
        },
    );
    assert!(
        d.yaml
            .contains("redis: {interval: 2s, timeout: 1600ms, fall: 3, rise: 2}"),
        "{}",
        d.yaml
    );
    assert!(d.yaml.contains("\nname: x\n"));
}
