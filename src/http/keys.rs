//! Verified API keys in memory, kept true by revocations Postgres announces.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::TenantId;
use crate::store::api_keys;

/// Verified API keys (token SHA-256 → tenant), so a request with a known token needs no query.
///
/// Invariant: an entry is a key that was active when it was looked up, and is gone moments
/// after that key is revoked. Every instance listens for revocations
/// ([`spawn_revocation_listener`]) and forgets the key; while it cannot hear them (listener
/// not connected yet, or lost) nothing is cached and nothing cached is kept, because
/// notifications sent meanwhile are lost. Absence is never cached: an unknown token is looked
/// up every time. The TTL only bounds an entry's life should all of that fail.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Keys>,
}

struct Keys {
    verified: Cache<[u8; 32], TenantId>,
    /// Moves with every revocation heard and every loss or return of the listener. A lookup
    /// that saw it move while it ran may have read a key just revoked, so it keeps nothing.
    epoch: AtomicU64,
    /// Whether revocations are being heard, so entries may be kept.
    listening: AtomicBool,
}

impl KeyCache {
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let verified = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl)
            .build();
        Self {
            inner: Arc::new(Keys {
                verified,
                epoch: AtomicU64::new(0),
                listening: AtomicBool::new(false),
            }),
        }
    }

    /// The tenant of a token digest: from memory when verified before, else by `lookup`
    /// (whose positive answer is kept while revocations are heard).
    pub async fn tenant<E, F, Fut>(
        &self,
        digest: [u8; 32],
        lookup: F,
    ) -> Result<Option<TenantId>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<TenantId>, E>>,
    {
        if let Some(tenant) = self.inner.verified.get(&digest).await {
            return Ok(Some(tenant));
        }
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let found = lookup().await?;
        if let Some(tenant) = found {
            self.keep(digest, tenant, epoch).await;
        }
        Ok(found)
    }

    async fn keep(&self, digest: [u8; 32], tenant: TenantId, looked_up_at: u64) {
        if !self.inner.listening.load(Ordering::SeqCst) {
            return;
        }
        self.inner.verified.insert(digest, tenant).await;
        // checked after inserting: a revocation heard from here on removes the entry itself,
        // one heard before the insert moved the epoch and is honoured here
        if self.inner.epoch.load(Ordering::SeqCst) != looked_up_at {
            self.inner.verified.invalidate(&digest).await;
        }
    }

    /// Whether revocations are being heard (and verified keys kept).
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::SeqCst)
    }

    /// Whether the key with this token digest is answered from memory.
    pub fn holds(&self, digest: &[u8; 32]) -> bool {
        self.inner.verified.contains_key(digest)
    }

    /// A key was revoked: forget it (a payload that is no digest forgets everything).
    pub async fn revoked(&self, payload: &str) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        match hex::decode(payload)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
        {
            Some(digest) => self.inner.verified.invalidate(&digest).await,
            None => self.inner.verified.invalidate_all(),
        }
    }

    /// Revocations are heard from now on; what was kept before may have missed some.
    pub fn listening(&self) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.verified.invalidate_all();
        self.inner.listening.store(true, Ordering::SeqCst);
    }

    /// Revocations are no longer heard: keep nothing until they are again.
    pub fn deaf(&self) {
        self.inner.listening.store(false, Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.verified.invalidate_all();
    }
}

/// Keeps `keys` told of revoked API keys: listens on its own connection, and whenever that
/// connection is lost, empties the cache and reconnects (notifications sent meanwhile are
/// lost, so nothing kept before can be trusted).
pub fn spawn_revocation_listener(
    database_url: SecretString,
    keys: KeyCache,
    stopping: crate::stopping::Stopping,
) {
    actix_web::rt::spawn(stopping.until_stopped(async move {
        loop {
            let url = database_url.expose_secret();
            let mut listener = crate::store::until_ok("listening for revoked API keys", || {
                api_keys::listen_for_revocations(url)
            })
            .await;
            keys.listening();
            let lost = loop {
                match listener.next().await {
                    Ok(Some(payload)) => keys.revoked(&payload).await,
                    Ok(None) => break "connection lost".to_owned(),
                    Err(e) => break e.to_string(),
                }
            };
            keys.deaf();
            tracing::warn!(reason = %lost, "not hearing API key revocations; keys are checked in Postgres until it reconnects");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn tenant(id: i64) -> TenantId {
        TenantId::new(id).unwrap()
    }

    /// A lookup that counts its calls and answers `answer`.
    async fn counted(
        keys: &KeyCache,
        digest: [u8; 32],
        calls: &AtomicUsize,
        answer: Option<TenantId>,
    ) -> Option<TenantId> {
        let lookup = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(answer)
        };
        keys.tenant(digest, lookup).await.unwrap()
    }

    fn listening_cache() -> KeyCache {
        let keys = KeyCache::new(Duration::from_secs(60), 100);
        keys.listening();
        keys
    }

    #[tokio::test]
    async fn a_verified_key_is_answered_without_a_lookup_until_it_is_revoked() {
        let keys = listening_cache();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let found = counted(&keys, [1; 32], &calls, Some(tenant(7))).await;
            assert_eq!(found, Some(tenant(7)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        keys.revoked(&hex::encode([1u8; 32])).await;
        assert_eq!(counted(&keys, [1; 32], &calls, None).await, None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unknown_token_is_looked_up_every_time() {
        let keys = listening_cache();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(counted(&keys, [2; 32], &calls, None).await, None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn nothing_is_kept_while_revocations_are_not_heard() {
        let keys = listening_cache();
        let calls = AtomicUsize::new(0);
        counted(&keys, [3; 32], &calls, Some(tenant(7))).await;
        keys.deaf();
        counted(&keys, [3; 32], &calls, Some(tenant(7))).await;
        counted(&keys, [3; 32], &calls, Some(tenant(7))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_revocation_heard_during_a_lookup_keeps_its_answer_out_of_the_cache() {
        let keys = listening_cache();
        let calls = AtomicUsize::new(0);
        let lookup = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            keys.revoked(&hex::encode([4u8; 32])).await;
            Ok::<_, ()>(Some(tenant(7)))
        };
        keys.tenant([4; 32], lookup).await.unwrap();
        counted(&keys, [4; 32], &calls, None).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
