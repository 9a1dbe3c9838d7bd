//! Notifications: a webhook per `notifications` entry, JSON (medic's own shape) or Slack's
//! `{"text": ...}`. Sent in the background with a bound; a webhook that fails is logged and
//! never delays a recovery.

use std::time::Duration;

use medic_topology::{Notification, Topology, WebhookFormat};

use crate::journal::now_ms;

const SEND_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    hooks: Vec<(String, WebhookFormat)>,
}

impl Notifier {
    /// The topology's webhooks; a `url_env` that is not set is reported and skipped.
    pub fn from_topology(top: &Topology) -> Notifier {
        let mut hooks = Vec::new();
        for n in &top.notifications {
            let Notification::Webhook(w) = &n.value;
            let url = match (&w.url, &w.url_env) {
                (Some(u), _) => Some(u.value.clone()),
                (None, Some(var)) => match std::env::var(&var.value) {
                    Ok(u) if !u.is_empty() => Some(u),
                    _ => {
                        tracing::error!(var = %var.value, "A webhook's url_env is not set: its notifications are not sent.");
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some(url) = url {
                hooks.push((url, w.format));
            }
        }
        Notifier { hooks }
    }

    /// The body sent for one event.
    pub fn body(
        format: WebhookFormat,
        event: &str,
        topology: &str,
        message: &str,
        details: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        match format {
            WebhookFormat::Json => serde_json::json!({
                "source": "medic",
                "topology": topology,
                "event": event,
                "message": message,
                "at_ms": now_ms(),
                "details": details,
            }),
            WebhookFormat::Slack => serde_json::json!({
                "text": format!("*medic* `{topology}` — {event}: {message}"),
            }),
        }
    }

    pub fn send(
        &self,
        event: &str,
        topology: &str,
        message: &str,
        details: Option<serde_json::Value>,
    ) {
        let message = crate::hygiene::printable(message);
        for (url, format) in &self.hooks {
            let body = Self::body(*format, event, topology, &message, details.as_ref());
            let url = url.clone();
            let event = event.to_owned();
            tokio::spawn(async move {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                match crate::http::send("POST", &url, None, "application/json", bytes, SEND_WITHIN)
                    .await
                {
                    Ok((status, _)) if (200..300).contains(&status) => {}
                    Ok((status, _)) => {
                        let webhook = crate::hygiene::redact_url(&url);
                        tracing::warn!(%event, %webhook, status, "The webhook refused a notification.")
                    }
                    Err(e) => {
                        // The URL is a secret: never in a log line.
                        let webhook = crate::hygiene::redact_url(&url);
                        let error = crate::hygiene::without_url(&e.to_string(), &url);
                        tracing::warn!(%event, %webhook, %error, "A notification was not sent.")
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_the_event_and_slack_gets_one_line_of_text() {
        let details = serde_json::json!({"step": 3});
        let j = Notifier::body(
            WebhookFormat::Json,
            "step_failed",
            "barton",
            "step 3 failed",
            Some(&details),
        );
        assert_eq!(j["source"], "medic");
        assert_eq!(j["event"], "step_failed");
        assert_eq!(j["topology"], "barton");
        assert_eq!(j["details"]["step"], 3);
        let s = Notifier::body(
            WebhookFormat::Slack,
            "held",
            "barton",
            "replacement held",
            None,
        );
        assert_eq!(
            s,
            serde_json::json!({"text": "*medic* `barton` — held: replacement held"})
        );
    }
}
