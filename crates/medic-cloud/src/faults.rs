//! A cloud that behaves badly on purpose, for tests: the wrapped cloud does the work, and this
//! one lies about how fast it happens or fails some calls. Emulators make every transition
//! instant (moto's instances run at once, its DNS changes are always in sync), so slow and
//! failing transitions are tested through this wrapper, which implements the same traits.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::{
    ChangeId, Cloud, CloudError, Dns, Instance, InstanceState, LaunchSpec, Launched, RecordSet,
    TerminateOutcome,
};

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A launched instance reads as `pending` for this long.
    pub pending_for: Duration,
    /// A DNS change reads as not in sync for this long.
    pub dns_pending_for: Duration,
    /// The next this-many launches fail as throttled.
    pub throttle_launches: u32,
}

#[derive(Debug)]
pub struct Faulty<T> {
    pub inner: T,
    faults: Faults,
    launched_at: Mutex<HashMap<String, Instant>>,
    changed_at: Mutex<HashMap<String, Instant>>,
    throttles_left: AtomicU32,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, faults: Faults) -> Self {
        let throttles_left = AtomicU32::new(faults.throttle_launches);
        Faulty {
            inner,
            faults,
            launched_at: Mutex::default(),
            changed_at: Mutex::default(),
            throttles_left,
        }
    }
}

fn still(since: Option<&Instant>, for_: Duration) -> bool {
    since.is_some_and(|t| t.elapsed() < for_)
}

impl<C: Cloud> Cloud for Faulty<C> {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, CloudError> {
        let left = self.throttles_left.load(Ordering::SeqCst);
        if left > 0 {
            self.throttles_left.store(left - 1, Ordering::SeqCst);
            return Err(CloudError::Throttled {
                op: "launch",
                attempts: 1,
                message: "injected".into(),
            });
        }
        let l = self.inner.launch(spec).await?;
        if let Ok(mut m) = self.launched_at.lock() {
            m.entry(l.instance.id.clone()).or_insert_with(Instant::now);
        }
        Ok(l)
    }

    async fn describe(&self, id: &str) -> Result<Option<Instance>, CloudError> {
        let mut i = self.inner.describe(id).await?;
        let pending = self
            .launched_at
            .lock()
            .map(|m| still(m.get(id), self.faults.pending_for))
            .unwrap_or(false);
        if let Some(i) = i.as_mut().filter(|_| pending) {
            i.state = InstanceState::Pending;
        }
        Ok(i)
    }

    async fn find(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Instance>, CloudError> {
        self.inner.find(tags).await
    }

    async fn terminate(&self, id: &str) -> Result<TerminateOutcome, CloudError> {
        self.inner.terminate(id).await
    }

    async fn host_keys(&self, id: &str) -> Result<Vec<String>, CloudError> {
        self.inner.host_keys(id).await
    }

    async fn retag(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[&str],
    ) -> Result<(), CloudError> {
        self.inner.retag(id, set, remove).await
    }

    async fn stop(&self, id: &str) -> Result<(), CloudError> {
        self.inner.stop(id).await
    }

    /// A started instance reads as `pending` for `pending_for`, as a launched one does.
    async fn start(&self, id: &str) -> Result<(), CloudError> {
        self.inner.start(id).await?;
        if let Ok(mut m) = self.launched_at.lock() {
            m.insert(id.to_owned(), Instant::now());
        }
        Ok(())
    }

    async fn move_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        self.inner.move_address(id, ip, elastic).await
    }

    async fn release_address(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        elastic: Option<&str>,
    ) -> Result<String, CloudError> {
        self.inner.release_address(id, ip, elastic).await
    }
}

impl<D: Dns> Dns for Faulty<D> {
    async fn upsert(
        &self,
        name: &str,
        ttl: u32,
        values: &[IpAddr],
    ) -> Result<ChangeId, CloudError> {
        let c = self.inner.upsert(name, ttl, values).await?;
        if let Ok(mut m) = self.changed_at.lock() {
            m.insert(c.0.clone(), Instant::now());
        }
        Ok(c)
    }

    async fn in_sync(&self, change: &ChangeId) -> Result<bool, CloudError> {
        let pending = self
            .changed_at
            .lock()
            .map(|m| still(m.get(&change.0), self.faults.dns_pending_for))
            .unwrap_or(false);
        if pending {
            Ok(false)
        } else {
            self.inner.in_sync(change).await
        }
    }

    async fn read(&self, name: &str) -> Result<Option<RecordSet>, CloudError> {
        self.inner.read(name).await
    }
}
