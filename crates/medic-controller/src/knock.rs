//! The knock: a check that has not answered by its suspicion time is joined by a fresh TCP
//! connection to the machine's SSH port — a port medic always reaches, and whose accept queue
//! a busy service cannot fill. A busy or hung process still has a kernel (and an sshd) that
//! completes the handshake, so its machine *answers the knock* and the check goes on to its
//! timeout as before ([`or_knock`]: the check is never abandoned for a late reply). A crashed or cut-off machine answers nothing: the check ends at once as
//! silence *of the machine* ([`crate::checks::CheckResult::knocked`]), and the core asks the
//! machine's witnesses to knock too, deciding on their answer without waiting for `fall`
//! misses (see `core::detect`).
//!
//! The suspicion time adapts to the target: four times the slowest of its recent replies
//! (decaying), at least [`FLOOR`]. The knock is given the same time, so its verdict is in
//! before the check's own timeout. When that time would exceed a third of the timeout — a
//! slow or congested network, a loaded host — there is no knock at all: a handshake that slow
//! says nothing in time, and the check is judged by `fall` misses as without the knock.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The shortest suspicion time, and the shortest knock.
pub const FLOOR: Duration = Duration::from_millis(50);

/// A witness is given at least this long to knock (its SSH command starts a shell first).
pub const WITNESS_FLOOR: Duration = Duration::from_millis(100);

/// One target's recent reply times, for its suspicion time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Suspicion {
    slow: Duration,
}

impl Suspicion {
    /// A reply that took `took`: the slowest recent reply decays by a sixteenth per reply.
    pub fn answered(&mut self, took: Duration) {
        self.slow = took.max(self.slow.saturating_sub(self.slow / 16));
    }

    /// How long a check of this target may go unanswered before its machine is knocked at,
    /// and how long the knock may take, for a check bounded by `timeout`; `None`: no knock
    /// (its replies are too slow for one to say anything within the timeout).
    pub fn after(&self, timeout: Duration) -> Option<Duration> {
        let after = (self.slow * 4).max(FLOOR);
        (after <= timeout / 3).then_some(after)
    }
}

/// What a knock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Knocked {
    /// The machine's kernel answered: it accepted, or refused, the connection.
    Answered,
    /// Nothing within the bound, or the network says the machine is unreachable.
    Silent(String),
}

/// A TCP connection to `at`, bounded by `within`.
pub async fn knock(at: SocketAddr, within: Duration) -> Knocked {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(at)).await {
        Ok(Ok(_)) => Knocked::Answered,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Knocked::Answered,
        Ok(Err(e)) => Knocked::Silent(format!("a TCP connection to {at} fails: {e}")),
        Err(_) => Knocked::Silent(format!(
            "its machine does not answer a TCP connection to port {} within {}",
            at.port(),
            medic_playbook::human_ms(within.as_millis() as u64)
        )),
    }
}

/// `check`, or — if it has not finished `after` it began — a knock at `at` alongside it: the
/// check's own result if the machine answers the knock (or the check finishes first), else
/// `Err` with what was seen, the check abandoned.
pub async fn or_knock<F: Future>(
    mut check: std::pin::Pin<&mut F>,
    knock_at: Option<(SocketAddr, Duration)>,
) -> Result<F::Output, String> {
    let Some((at, after)) = knock_at else {
        return Ok(check.await);
    };
    tokio::select! {
        biased;
        r = &mut check => return Ok(r),
        () = tokio::time::sleep(after) => {}
    }
    // Boxed: created only for a late check, and kept out of every check's future.
    let knocked = Box::pin(knock(at, after));
    tokio::select! {
        biased;
        r = &mut check => Ok(r),
        k = knocked => match k {
            Knocked::Answered => Ok(check.await),
            Knocked::Silent(why) => Err(format!(
                "no answer within {}, and {why}",
                medic_playbook::human_ms(after.as_millis() as u64 * 2)
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suspicion_time_follows_the_replies_within_its_bounds() {
        let timeout = Duration::from_millis(300);
        let mut s = Suspicion::default();
        assert_eq!(s.after(timeout), Some(FLOOR));
        s.answered(Duration::from_millis(20));
        assert_eq!(s.after(timeout), Some(Duration::from_millis(80)));
        // A slow reply raises it at once; beyond a third of the timeout, no knock.
        s.answered(Duration::from_millis(25));
        assert_eq!(s.after(timeout), Some(Duration::from_millis(100)));
        s.answered(Duration::from_millis(26));
        assert_eq!(s.after(timeout), None);
        // Fast replies bring it down again, slowly.
        for _ in 0..100 {
            s.answered(Duration::from_micros(300));
        }
        assert_eq!(s.after(timeout), Some(FLOOR));
        // A timeout shorter than three floors gets no knock.
        assert_eq!(Suspicion::default().after(Duration::from_millis(120)), None);
    }

    /// A listener whose accept queue is full: Linux drops new SYNs, so a connection to it is
    /// silent, as to a crashed machine, on the loopback.
    #[tokio::test]
    async fn a_knock_tells_a_silent_machine_from_a_busy_or_stopped_process() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = open.local_addr().unwrap();
        assert_eq!(knock(at, FLOOR).await, Knocked::Answered);
        drop(open);
        // Nobody listens: the kernel refuses, so the machine is there.
        assert_eq!(knock(at, FLOOR).await, Knocked::Answered);
        let (l, _held) = medic_testkit::full_listener([127, 0, 0, 1].into());
        let silent = l.local_addr().unwrap();
        assert!(
            matches!(knock(silent, FLOOR).await, Knocked::Silent(_)),
            "a full accept queue drops the SYN"
        );
        // A check that never finishes: abandoned once the knock is not answered.
        let never = std::pin::pin!(std::future::pending::<()>());
        let r = or_knock(never, Some((silent, FLOOR))).await;
        let why = r.expect_err("the knock is silent");
        assert!(why.contains("does not answer a TCP connection"), "{why}");
        // A knock answered: the check's own result, however late.
        let slow = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            7
        });
        assert_eq!(or_knock(slow, Some((at, FLOOR))).await, Ok(7));
    }
}
