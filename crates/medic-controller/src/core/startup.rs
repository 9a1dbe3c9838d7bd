//! Who is master of a shard at start-up (pure): the saved record against what the servers
//! answer. See `controller/discover.rs` for the rule in words.

use std::collections::BTreeMap;
use std::net::IpAddr;

use medic_redis::{ReplicationInfo, Role};

/// The shard's master after start-up, and an alert if the answers disagree with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// A server to record as master instead of (or for lack of) the recorded one.
    pub adopt: Option<String>,
    pub alert: Option<String>,
}

/// `recorded`: the saved state's master (`had_state`: there was a saved state at all);
/// `answers`: each server that answered `INFO replication` in time; `port`: the shard's port;
/// `address`: each machine's address.
pub fn who_is_master(
    shard: &str,
    port: u16,
    had_state: bool,
    recorded: Option<&str>,
    answers: &BTreeMap<String, ReplicationInfo>,
    address: impl Fn(&str) -> Option<IpAddr>,
) -> Adoption {
    let masters: Vec<&String> = answers
        .iter()
        .filter(|(_, i)| i.role == Role::Master)
        .map(|(m, _)| m)
        .collect();
    let none = |alert: Option<String>| Adoption { adopt: None, alert };
    match (masters.as_slice(), recorded) {
        ([only], Some(rec)) if *only == rec => none(None),
        ([only], Some(rec)) if had_state => {
            // Adopted only if the recorded master follows it: the role moved while medic was
            // away, and the old master already replicates the new one.
            let follows = answers.get(rec).is_some_and(|i| {
                i.role == Role::Replica
                    && i.master.as_ref().is_some_and(|(host, p)| {
                        *p == port && address(only).is_some_and(|ip| host.parse() == Ok(ip))
                    })
            });
            if follows {
                Adoption {
                    adopt: Some((*only).clone()),
                    alert: None,
                }
            } else {
                none(Some(format!(
                    "shard {shard}: {only} answers as master, but {rec} is the recorded master ({}): medic keeps {rec} and treats {only} as a stale master",
                    if answers.contains_key(rec) {
                        "it answers as a replica of another server"
                    } else {
                        "it did not answer at start"
                    }
                )))
            }
        }
        ([only], _) => Adoption {
            adopt: Some((*only).clone()),
            alert: None,
        },
        ([], _) => none(None),
        (many, rec) => none(Some(format!(
            "shard {shard} has {} masters ({}): medic keeps {} as recorded and demotes the others",
            many.len(),
            many.iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            rec.unwrap_or("?")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(role: Role, master: Option<&str>) -> ReplicationInfo {
        ReplicationInfo {
            role,
            master: master.map(|h| (h.to_owned(), 9001)),
            master_link_status: None,
            sync_in_progress: false,
            offset: 0,
            replica_offset: None,
            replicas: Vec::new(),
            master_last_io_secs: None,
        }
    }

    fn address(m: &str) -> Option<IpAddr> {
        match m {
            "redis1" => "10.77.0.10".parse().ok(),
            "redis2" => "10.77.0.11".parse().ok(),
            _ => None,
        }
    }

    /// (case, had_state, recorded, answers, adopted, alert contains)
    type Row = (
        &'static str,
        bool,
        Option<&'static str>,
        Vec<(&'static str, ReplicationInfo)>,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn the_record_wins_unless_its_master_follows_the_other() {
        let rows: Vec<Row> = vec![
            (
                "the recorded master answers as master",
                true,
                Some("redis2"),
                vec![
                    ("redis2", info(Role::Master, None)),
                    ("redis1", info(Role::Replica, Some("10.77.0.11"))),
                ],
                None,
                None,
            ),
            (
                // The defect: the real master slow to answer, a stale one adopted and the real
                // one demoted by the next check, discarding every write since the failover.
                "the recorded master is slow to answer: a stale master is not adopted",
                true,
                Some("redis2"),
                vec![("redis1", info(Role::Master, None))],
                None,
                Some("treats redis1 as a stale master"),
            ),
            (
                "the recorded master follows the other: the role moved while medic was away",
                true,
                Some("redis1"),
                vec![
                    ("redis2", info(Role::Master, None)),
                    ("redis1", info(Role::Replica, Some("10.77.0.11"))),
                ],
                Some("redis2"),
                None,
            ),
            (
                "the recorded master is a replica of someone else",
                true,
                Some("redis1"),
                vec![
                    ("redis2", info(Role::Master, None)),
                    ("redis1", info(Role::Replica, Some("10.77.0.99"))),
                ],
                None,
                Some("replica of another server"),
            ),
            (
                "a first start: the deployment's own roles",
                false,
                Some("redis1"),
                vec![("redis2", info(Role::Master, None))],
                Some("redis2"),
                None,
            ),
            (
                "two masters: the record is kept, the others demoted",
                true,
                Some("redis1"),
                vec![
                    ("redis1", info(Role::Master, None)),
                    ("redis2", info(Role::Master, None)),
                ],
                None,
                Some("has 2 masters"),
            ),
            ("nobody answers", true, Some("redis1"), vec![], None, None),
        ];
        for (case, had_state, recorded, answers, adopted, alert) in rows {
            let answers: BTreeMap<String, ReplicationInfo> = answers
                .into_iter()
                .map(|(m, i)| (m.to_owned(), i))
                .collect();
            let got = who_is_master("r9001", 9001, had_state, recorded, &answers, address);
            assert_eq!(got.adopt.as_deref(), adopted, "{case}");
            match alert {
                None => assert_eq!(got.alert, None, "{case}"),
                Some(a) => assert!(
                    got.alert.as_deref().is_some_and(|x| x.contains(a)),
                    "{case}: {:?}",
                    got.alert
                ),
            }
        }
    }
}
