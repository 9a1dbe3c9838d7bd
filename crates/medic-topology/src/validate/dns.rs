//! `dns`: the provider of the records, and each record's name, machines and TTL.

use super::*;

impl Ctx<'_, '_> {
    pub(super) fn dns(&mut self) {
        let top = self.top;
        let Some(dns) = &top.dns else { return };
        let dns = &dns.value;
        let ttl = &dns.ttl;
        if ttl.value < 0 || ttl.value > MAX_TTL {
            self.d.error(
                ttl.referenced,
                "dns.ttl",
                format!("TTL {} is out of range; expected 0 to {} seconds (Route 53's range; 60 is usual for failover)", ttl.value, MAX_TTL),
            );
        }
        let zone = dns
            .provider
            .value
            .zone()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if zone.is_empty() {
            self.d.error(
                dns.provider.referenced,
                "dns.provider",
                "empty zone; expected the zone's name, like example.com",
            );
        }
        if let DnsProvider::Route53(r) = &dns.provider.value
            && r.zone_id.trim().is_empty()
        {
            self.d.error(
                dns.provider.referenced,
                "dns.provider.route53.zone_id",
                "empty; expected a hosted zone id like Z0123456789ABC",
            );
        }
        if let DnsProvider::Rfc2136(r) = &dns.provider.value
            && r.tsig_key.trim().is_empty()
        {
            self.d.error(
                dns.provider.referenced,
                "dns.provider.rfc2136.tsig_key",
                "empty; expected the TSIG key's name",
            );
        }
        let mut seen: BTreeMap<String, Location> = BTreeMap::new();
        for (i, sr) in dns.records.iter().enumerate() {
            let r = &sr.value;
            let p = format!("dns.records[{i}]");
            let name = r.name.value.trim_end_matches('.').to_ascii_lowercase();
            if let Some(first) = seen.get(&name) {
                self.d.error(
                    r.name.referenced,
                    format!("{p}.name"),
                    format!(
                        "duplicate record `{}` (first defined at line {}); expected unique names",
                        r.name.value,
                        first.line()
                    ),
                );
            } else {
                seen.insert(name.clone(), r.name.referenced);
            }
            if !zone.is_empty() && name != zone && !name.ends_with(&format!(".{zone}")) {
                self.d.error(
                    r.name.referenced,
                    format!("{p}.name"),
                    format!(
                        "`{}` is outside the zone {}; expected a name ending in .{}",
                        r.name.value, zone, zone
                    ),
                );
            }
            if r.machines.is_empty() {
                self.d.error(
                    sr.referenced,
                    format!("{p}.machines"),
                    "no machines: the record would have no value; expected at least one machine",
                );
            }
            for (j, m) in r.machines.iter().enumerate() {
                if !self.roles.contains_key(m.value.as_str()) {
                    let expected = one_of(top.machines.iter().map(|m| m.value.name.value.as_str()));
                    self.d.error(
                        m.referenced,
                        format!("{p}.machines[{j}]"),
                        format!("unknown machine `{}`; {}", m.value, expected),
                    );
                }
            }
        }
    }
}
