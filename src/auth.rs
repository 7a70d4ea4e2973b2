//! Tokens at run time: which principal a bearer token is, whether it may go
//! on (its request rate, its open streams), and creating, listing and
//! revoking tokens. The rules of who may do what live in
//! [`crate::domain::access`]; this is the bookkeeping around them.
//!
//! Secrets exist only in the answer to a create and in the first-start
//! `admin.token` file: the store and memory hold SHA-256 hashes.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::domain::access::{hash_presented, token_text, SecretHash};
use crate::domain::{check_short_text, DeskError, Grant, Principal, TokenId, TokenRecord};
use crate::store::{Change, Log, Storage, TokenStore};

/// Name of the first admin token's file in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Limits applied per principal (token) and to the whole server.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// Sustained requests per second per token.
    pub requests_per_second: NonZeroU32,
    /// Requests a token may make at once above the sustained rate.
    pub request_burst: NonZeroU32,
    /// Open streams per token.
    pub streams_per_principal: usize,
    /// Open streams on the whole server.
    pub max_streams: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            requests_per_second: NonZeroU32::new(20_000).expect("non-zero"),
            request_burst: NonZeroU32::new(40_000).expect("non-zero"),
            streams_per_principal: 16,
            max_streams: 20_000,
        }
    }
}

/// A token that authenticated: its principal and its run-time state.
#[derive(Debug)]
pub struct Caller {
    pub principal: Principal,
    /// Ends the token's open streams: cancelled when it is revoked, and (as
    /// a child of the server's shutdown token) when the server drains.
    stop: CancellationToken,
    revoked: AtomicBool,
    last_used: AtomicI64,
    streams: AtomicUsize,
    limiter: DefaultDirectRateLimiter,
}

impl Caller {
    fn new(
        principal: Principal,
        last_used: Option<i64>,
        limits: &AuthLimits,
        shutdown: &CancellationToken,
    ) -> Self {
        Caller {
            principal,
            stop: shutdown.child_token(),
            revoked: AtomicBool::new(false),
            last_used: AtomicI64::new(last_used.unwrap_or(0)),
            streams: AtomicUsize::new(0),
            limiter: RateLimiter::direct(
                Quota::per_second(limits.requests_per_second).allow_burst(limits.request_burst),
            ),
        }
    }

    /// What ends this caller's streams: revocation or the server's shutdown.
    pub fn stream_stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Takes one request from the token's bucket.
    fn admit(&self) -> Result<(), DeskError> {
        self.limiter
            .check()
            .map_err(|not_until| DeskError::RateLimited {
                retry_after: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .max(Duration::from_millis(1)),
            })
    }
}

/// Held by an open stream: counts it against its token and the server.
#[derive(Debug)]
pub struct StreamPermit {
    caller: Arc<Caller>,
    _server: OwnedSemaphorePermit,
}

impl StreamPermit {
    pub fn caller(&self) -> &Arc<Caller> {
        &self.caller
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.caller.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn random<const N: usize>() -> Result<[u8; N], DeskError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| DeskError::Storage(format!("no randomness for a token: {e}")))?;
    Ok(bytes)
}

/// Every token, and the live ones by the hash of their secret.
#[derive(Debug)]
pub struct TokenRegistry {
    log: Arc<dyn Log>,
    store: Arc<dyn TokenStore>,
    limits: AuthLimits,
    /// Live (unrevoked) tokens: what authentication reads, on every call.
    live: RwLock<HashMap<SecretHash, Arc<Caller>>>,
    /// Every record, revoked ones too. Its lock serialises token writes, so
    /// a last-used update can never write back a revoked token as live.
    records: Mutex<BTreeMap<TokenId, TokenRecord>>,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl TokenRegistry {
    /// Loads every token from the store; `shutdown` ends every stream.
    pub fn open(
        storage: &Storage,
        limits: AuthLimits,
        shutdown: CancellationToken,
    ) -> Result<Self, DeskError> {
        let mut live = HashMap::new();
        let mut records = BTreeMap::new();
        for record in storage.tokens.tokens()? {
            if record.revoked_at.is_none() {
                live.insert(
                    record.secret_hash,
                    Arc::new(Caller::new(
                        record.principal(),
                        record.last_used_at,
                        &limits,
                        &shutdown,
                    )),
                );
            }
            records.insert(record.id.clone(), record);
        }
        Ok(TokenRegistry {
            log: storage.log.clone(),
            store: storage.tokens.clone(),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            limits,
            live: RwLock::new(live),
            records: Mutex::new(records),
            shutdown,
        })
    }

    /// Takes in a token record another node wrote (applied from the log):
    /// a new token works here from now on, a revoked one stops.
    pub fn applied(&self, record: &TokenRecord) {
        let mut records = self.records();
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if record.revoked_at.is_some() {
            if let Some(caller) = live.remove(&record.secret_hash) {
                caller.revoke();
            }
        } else {
            live.entry(record.secret_hash).or_insert_with(|| {
                Arc::new(Caller::new(
                    record.principal(),
                    record.last_used_at,
                    &self.limits,
                    &self.shutdown,
                ))
            });
        }
        records.insert(record.id.clone(), record.clone());
    }

    /// Takes in every record of the store again (after it was rebuilt).
    pub fn reload(&self) -> Result<(), DeskError> {
        for record in self.store.tokens()? {
            self.applied(&record);
        }
        Ok(())
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<TokenId, TokenRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller a bearer token stands for, charged one request. Unknown
    /// and revoked tokens get the same answer.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Caller>, DeskError> {
        let hash = hash_presented(token)?;
        let caller = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned()
            .ok_or_else(|| DeskError::Unauthenticated("unknown or revoked token".into()))?;
        caller.admit()?;
        caller.last_used.store(now_micros(), Ordering::Relaxed);
        Ok(caller)
    }

    /// A caller standing for every request when authentication is off
    /// (local experiments only): an admin, still rate-limited.
    pub fn anonymous_admin(&self) -> Arc<Caller> {
        Arc::new(Caller::new(
            Principal {
                token_id: TokenId::from_random([0; 8]),
                label: "auth-off".into(),
                grant: Grant::Admin,
            },
            None,
            &self.limits,
            &self.shutdown,
        ))
    }

    /// Charges `caller` one request (for callers made without a token).
    pub fn admit(&self, caller: &Caller) -> Result<(), DeskError> {
        caller.admit()
    }

    /// Opens a stream for `caller`, within its and the server's caps.
    pub fn open_stream(&self, caller: &Arc<Caller>) -> Result<StreamPermit, DeskError> {
        let limit = self.limits.streams_per_principal;
        let counted = caller
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if counted.is_err() {
            return Err(DeskError::TooManyStreams(format!(
                "this token already has {limit} open streams"
            )));
        }
        match self.streams.clone().try_acquire_owned() {
            Ok(permit) => Ok(StreamPermit {
                caller: caller.clone(),
                _server: permit,
            }),
            Err(_) => {
                caller.streams.fetch_sub(1, Ordering::AcqRel);
                Err(DeskError::TooManyStreams(format!(
                    "the server has its maximum of {} open streams",
                    self.limits.max_streams
                )))
            }
        }
    }

    /// Creates a token; returns its record and its secret text, which is
    /// never stored nor shown again.
    pub async fn create(
        &self,
        label: &str,
        grant: Grant,
    ) -> Result<(TokenRecord, String), DeskError> {
        if label.trim().is_empty() {
            return Err(DeskError::invalid("label", "a label is required"));
        }
        check_short_text("label", label)?;
        let text = token_text(random()?);
        let record = self.add(&text, label.to_owned(), grant).await?;
        tracing::info!(token_id = %record.id, label = %record.label, grant = %record.grant, "token created");
        Ok((record, text))
    }

    /// Every token, newest use included; never a secret.
    pub fn list(&self) -> Vec<TokenRecord> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        self.records()
            .values()
            .map(|record| {
                let mut record = record.clone();
                if let Some(caller) = live.get(&record.secret_hash) {
                    let used = caller.last_used.load(Ordering::Relaxed);
                    if used > 0 {
                        record.last_used_at = Some(used);
                    }
                }
                record
            })
            .collect()
    }

    /// Revokes a token at once: its next call and its open streams end with
    /// UNAUTHENTICATED. Revoking a revoked token changes nothing.
    pub async fn revoke(&self, id: &TokenId) -> Result<TokenRecord, DeskError> {
        // Its last use is kept with it; read before `records` is locked, the
        // order `list` takes the two locks in.
        let last_used = self
            .list()
            .into_iter()
            .find(|r| &r.id == id)
            .and_then(|r| r.last_used_at);
        let (record, lsn) = {
            let mut records = self.records();
            let record = records
                .get_mut(id)
                .ok_or_else(|| DeskError::TokenNotFound(id.clone()))?;
            if record.revoked_at.is_some() {
                return Ok(record.clone());
            }
            let mut revoked = record.clone();
            revoked.revoked_at = Some(now_micros());
            revoked.last_used_at = last_used.or(revoked.last_used_at);
            let lsn = self.log.append(Change::Token(revoked.clone()))?.lsn;
            *record = revoked.clone();
            (revoked, lsn)
        };
        // Refused from here on, before durability: revocation must not wait.
        if let Some(caller) = self
            .live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.secret_hash)
        {
            caller.revoke();
        }
        self.log.wait_durable(lsn).await?;
        tracing::info!(token_id = %record.id, label = %record.label, "token revoked");
        Ok(record)
    }

    /// Stores the last-used times that changed since they were stored.
    /// Not awaited for durability: losing a few seconds of them is harmless.
    pub fn save_last_used(&self) -> Result<(), DeskError> {
        // Only the writer appends; a follower's last uses are not kept.
        if !self.log.writes_here() {
            return Ok(());
        }
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let mut records = self.records();
        for record in records.values_mut() {
            let Some(caller) = live.get(&record.secret_hash) else {
                continue;
            };
            let used = caller.last_used.load(Ordering::Relaxed);
            if used > 0 && record.last_used_at != Some(used) && record.revoked_at.is_none() {
                record.last_used_at = Some(used);
                self.log.append(Change::Token(record.clone()))?;
            }
        }
        Ok(())
    }

    /// Stores a new token whose secret is `text`, and makes it usable once
    /// durable: a token that worked must survive a crash.
    async fn add(&self, text: &str, label: String, grant: Grant) -> Result<TokenRecord, DeskError> {
        let record = TokenRecord {
            id: TokenId::from_random(random()?),
            label,
            grant,
            secret_hash: hash_presented(text)?,
            created_at: now_micros(),
            last_used_at: None,
            revoked_at: None,
        };
        let lsn = {
            let mut records = self.records();
            let lsn = self.log.append(Change::Token(record.clone()))?.lsn;
            records.insert(record.id.clone(), record.clone());
            lsn
        };
        self.log.wait_durable(lsn).await?;
        self.live.write().unwrap_or_else(|p| p.into_inner()).insert(
            record.secret_hash,
            Arc::new(Caller::new(
                record.principal(),
                None,
                &self.limits,
                &self.shutdown,
            )),
        );
        Ok(record)
    }

    /// On a data dir with no live admin token, creates one and writes it to
    /// `<data_dir>/admin.token` (mode 0600). Returns the file's path when
    /// it did. The file is written before the token is stored: a crash in
    /// between leaves a file whose token is unknown, and the next start
    /// replaces it, rather than a stored admin token nobody can read.
    pub async fn ensure_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, DeskError> {
        let has_admin = self
            .records()
            .values()
            .any(|r| r.grant == Grant::Admin && r.revoked_at.is_none());
        if has_admin {
            return Ok(None);
        }
        let text = token_text(random()?);
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_secret_file(&path, &text)
            .map_err(|e| DeskError::Storage(format!("cannot write {}: {e}", path.display())))?;
        self.add(&text, "first admin (admin.token)".into(), Grant::Admin)
            .await?;
        Ok(Some(path))
    }
}

/// Writes `text` to `path` readable by the owner only, atomically (a
/// temporary file renamed into place) and durably.
fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
