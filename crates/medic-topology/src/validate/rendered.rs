//! Strings of the topology that playbooks render into root-owned config files on the machines:
//! each must be a value of its kind, so that nothing (a line break, a space, a quote) can add a
//! directive of its own.

use super::Ctx;

/// redis's size notation: digits and an optional unit.
fn is_size(s: &str) -> bool {
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let unit = s[digits..].to_ascii_lowercase();
    digits > 0 && ["", "b", "k", "kb", "m", "mb", "g", "gb"].contains(&unit.as_str())
}

/// An absolute path of plain characters (letters, digits, `/`, `.`, `_`, `-`).
fn is_plain_path(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
}

impl Ctx<'_, '_> {
    pub(super) fn rendered(&mut self) {
        let top = self.top;
        for (i, s) in top.shards.iter().enumerate() {
            if let Some(m) = &s.value.maxmemory
                && !is_size(&m.value)
            {
                self.d.error(
                    m.referenced,
                    format!("shards[{i}].maxmemory"),
                    format!(
                        "{:?} is not a size; expected digits and an optional unit (b, k, kb, m, mb, g, gb), e.g. 512mb",
                        m.value
                    ),
                );
            }
        }
        let mut sockets = vec![(
            &top.proxies.value.runtime_api.value.socket,
            "proxies.runtime_api.socket".to_owned(),
        )];
        for (i, a) in top.app_proxies.iter().enumerate() {
            sockets.push((
                &a.value.runtime_api.value.socket,
                format!("app_proxies[{i}].runtime_api.socket"),
            ));
        }
        for (socket, path) in sockets {
            let text = socket.value.to_string_lossy();
            if !is_plain_path(&text) {
                self.d.error(
                    socket.referenced,
                    path,
                    format!(
                        "{text:?} is not a plain absolute path; expected letters, digits, `/`, `.`, `_` and `-` only, e.g. /run/haproxy/admin.sock"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_paths_are_values_never_directives() {
        for ok in ["512mb", "1GB", "100000", "64k"] {
            assert!(is_size(ok), "{ok}");
        }
        for bad in [
            "",
            "mb",
            "512 mb",
            "512mb\nslaveof 10.0.0.9 6379",
            "1tb",
            "-1",
        ] {
            assert!(!is_size(bad), "{bad:?}");
        }
        assert!(is_plain_path("/run/haproxy/admin.sock"));
        for bad in [
            "run/x.sock",
            "/run/x.sock level admin\nstats socket ipv4@0.0.0.0:9999 level admin",
            "/run/x y.sock",
            "/run/../etc/shadow",
        ] {
            assert!(!is_plain_path(bad), "{bad:?}");
        }
    }
}
