//! Server names that differ between medic and a HAProxy: an operator's haproxy.cfg may name a
//! machine's server `cache1` where medic knows the machine as `redis1`. [`crate::RuntimeApi`]
//! translates at its boundary, both ways, so everything above it speaks of machines.

use std::collections::BTreeMap;

use crate::{ServerName, ServerState};

/// medic's names and HAProxy's, one to one. Empty: every server is named after its machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    theirs: BTreeMap<String, String>,
    ours: BTreeMap<String, String>,
}

impl Aliases {
    /// From (medic's name, HAProxy's name) pairs; a pair naming the same twice is no alias.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut a = Aliases::default();
        for (ours, theirs) in pairs {
            if ours != theirs {
                a.theirs.insert(ours.clone(), theirs.clone());
                a.ours.insert(theirs, ours);
            }
        }
        a
    }

    pub fn is_empty(&self) -> bool {
        self.theirs.is_empty()
    }

    /// `s` as HAProxy names it.
    pub fn to_haproxy(&self, s: &ServerName) -> ServerName {
        match self.theirs.get(&s.server) {
            Some(t) => ServerName::new(s.backend.clone(), t.clone()),
            None => s.clone(),
        }
    }

    /// The server HAProxy reports, named as medic knows it. A server HAProxy itself names
    /// after a machine whose server is named otherwise is no machine's: it is reported as
    /// `NAME (not the machine)`, which matches none (a stray line medic must not take for the
    /// machine's, e.g. a backup line to the same redis).
    pub fn to_medic(&self, mut st: ServerState) -> ServerState {
        if let Some(o) = self.ours.get(&st.server) {
            st.server = o.clone();
        } else if self.theirs.contains_key(&st.server) {
            st.server = format!("{} (not the machine)", st.server);
        }
        st
    }

    /// The name HAProxy knows the server `ours` by.
    pub fn haproxy_name<'a>(&'a self, ours: &'a str) -> &'a str {
        self.theirs.get(ours).map_or(ours, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_translate_both_ways_and_others_pass_through() {
        let a = Aliases::new([
            ("redis1".to_owned(), "cache1".to_owned()),
            ("redis2".to_owned(), "redis2".to_owned()),
        ]);
        let s = ServerName::new("bk", "redis1");
        assert_eq!(a.to_haproxy(&s), ServerName::new("bk", "cache1"));
        assert_eq!(
            a.to_haproxy(&ServerName::new("bk", "redis2")),
            ServerName::new("bk", "redis2")
        );
        assert_eq!(a.haproxy_name("redis1"), "cache1");
        assert_eq!(a.haproxy_name("other"), "other");
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 bk 1 cache1 10.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n3 bk 2 cache9 10.0.0.2 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n3 bk 3 redis1 10.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n";
        let names: Vec<String> = crate::parse_servers_state(text)
            .unwrap()
            .into_iter()
            .map(|st| a.to_medic(st).server)
            .collect();
        assert_eq!(names, ["redis1", "cache9", "redis1 (not the machine)"]);
    }
}
