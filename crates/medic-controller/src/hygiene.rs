//! Text that leaves medic (alerts, events, webhooks, the journal's errors, logs) is made safe
//! here (pure):
//!
//! - [`printable`]: remote text (a command's stderr, a redis error, a cloud API's message) may
//!   carry terminal escapes or line breaks that would rewrite an operator's terminal or forge
//!   log lines; control characters become `�` and line breaks a space.
//! - [`redact_url`]: a webhook URL is a secret (Slack's carry their token in the path): only
//!   its scheme and host are ever shown.
//! - [`without_secrets`]: a step's error or an alert that quotes a `redis_auth` password (a
//!   server's stderr echoing its config line) shows `********` instead.

/// `text` with each of `secrets` (the passwords of `redis_auth`) replaced by `********`: a
/// command's stderr or a server's error that quoted one must not carry it any further.
pub fn without_secrets<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s, "********");
        }
    }
    out
}

/// `text` with every control character replaced: line breaks and tabs by a space, the others
/// (ESC, BEL, NUL, DEL, C1 controls) by `�`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `https://hooks.slack.com/services/T0/B0/SECRET?x=1` → `https://hooks.slack.com/…`; text
/// that is not a URL is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a webhook URL)".to_owned();
    };
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// An error message about `url`, with the URL (and any part of it) redacted.
pub fn without_url(message: &str, url: &str) -> String {
    let redacted = redact_url(url);
    let mut out = message.replace(url, &redacted);
    // A client may print the URL normalised, or only its path.
    if let Some((_, rest)) = url.split_once("://")
        && let Some(i) = rest.find(['/', '?'])
        && rest.len() > i + 1
    {
        out = out.replace(&rest[i..], "/…");
    }
    printable(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_quoted_in_an_error_is_hidden() {
        let text = "step 4 (playbook): redis: >>> 'masterauth hunter2-0123456789abc' Bad directive";
        let out = without_secrets(text, ["hunter2-0123456789abc", ""]);
        assert_eq!(
            out,
            "step 4 (playbook): redis: >>> 'masterauth ********' Bad directive"
        );
    }

    #[test]
    fn control_characters_never_leave_medic() {
        assert_eq!(
            printable("exit 1: \u{1b}[2J\u{1b}]0;owned\u{7}gone\nINFO fake line\r\0"),
            "exit 1: \u{FFFD}[2J\u{FFFD}]0;owned\u{FFFD}gone INFO fake line \u{FFFD}"
        );
        assert_eq!(printable("plain — text"), "plain — text");
    }

    #[test]
    fn a_webhook_url_shows_its_host_only() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc";
        assert_eq!(redact_url(url), "https://hooks.slack.com/…");
        assert_eq!(
            redact_url("http://user:pw@10.0.0.5:8080/hook"),
            "http://10.0.0.5:8080/…"
        );
        assert_eq!(redact_url("not a url"), "(a webhook URL)");
        let e =
            format!("{url}: client error (Connect); path /services/T000/B000/XXXXSECRET?token=abc");
        let safe = without_url(&e, url);
        assert!(
            !safe.contains("XXXXSECRET") && !safe.contains("abc"),
            "{safe}"
        );
        assert!(
            safe.starts_with("https://hooks.slack.com/…: client error"),
            "{safe}"
        );
    }
}
