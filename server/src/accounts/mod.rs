//! Accounts: register, login, resume, revoke, and the account settings (read receipts
//! on/off).
//!
//! - [`credentials`]: argon2id password hashes and signed tokens.
//! - [`devices`]: device records (token epoch, rotation state, ack cursor), updated under
//!   one lock.
//! - [`rotation`]: which of a device's tokens Resume accepts (rotation with reuse
//!   detection), as a pure function of the device record.

pub(crate) mod admin;
pub(crate) mod credentials;
pub(crate) mod devices;
pub(crate) mod rotation;

use std::sync::{Arc, OnceLock};

use tern_proto::pb::{self, ErrorCode};

use self::credentials::{self as auth, TokenClaims, TokenError, TokenSigner};
use self::devices::Devices;
use self::rotation::{Place, Verdict};
use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use crate::sequencer::Sequencer;
use crate::store::{DeviceRecord, Store, UserRecord};
use crate::validate;

/// A refused Resume.
#[derive(Debug)]
pub struct Refused {
    pub error: ServiceError,
    /// Set when the token had been rotated out: the (user, device) whose tokens were
    /// revoked because of it.
    pub reused: Option<(String, String)>,
}

impl From<ServiceError> for Refused {
    fn from(error: ServiceError) -> Self {
        Self {
            error,
            reused: None,
        }
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

/// An authenticated (user, device) and what LoginOk tells it.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: String,
    pub device: String,
    pub token: String,
    pub expires_ms: u64,
    pub acked_inbox_seq: u64,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    devices: Arc<Devices>,
    clock: Arc<dyn Clock>,
    signer: TokenSigner,
    token_ttl_ms: u64,
    /// How long the token a device last resumed with stays accepted (rotation.rs).
    rotation_grace_ms: u64,
    hash_cost: auth::HashCost,
    /// A hash to verify against when the user does not exist, so a wrong user name costs
    /// the same time as a wrong password.
    /// Made on first use, on the blocking pool like every hash.
    dummy_hash: Arc<OnceLock<String>>,
    /// Held across every read-modify-write of a `UserRecord` (revoke-all, settings), so
    /// one never overwrites the other's change.
    user_writes: std::sync::Mutex<()>,
}

/// Runs an argon2id hash off the async threads, at most one per CPU at a time: each
/// hash holds ~19 MiB while it runs, so a burst of logins waits here instead of
/// multiplying memory and starving the other blocking work (store flushes).
async fn password_work<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> ServiceResult<T> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(n)
    });
    let _slot = slots
        .acquire()
        .await
        .map_err(|_| ServiceError::internal())?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ServiceError::internal())
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        devices: Arc<Devices>,
        clock: Arc<dyn Clock>,
        token_ttl_secs: u64,
        rotation_grace_secs: u64,
        hash_cost: auth::HashCost,
    ) -> Self {
        let signer = TokenSigner::new(store.signing_key(), store.store_epoch());
        Self {
            store,
            sequencer,
            devices,
            clock,
            signer,
            token_ttl_ms: token_ttl_secs.saturating_mul(1000),
            rotation_grace_ms: rotation_grace_secs.saturating_mul(1000),
            hash_cost,
            dummy_hash: Arc::new(OnceLock::new()),
            user_writes: std::sync::Mutex::new(()),
        }
    }

    /// Makes the writes just made durable before answering.
    async fn durable(&self) -> ServiceResult<()> {
        self.sequencer.wrote();
        self.sequencer.barrier().await
    }

    pub async fn register(&self, username: &str, password: &str) -> ServiceResult<()> {
        validate::username(username)?;
        validate::password(password)?;
        let taken = || ServiceError::new(ErrorCode::UserExists, format!("user {username} exists"));
        if username == admin::NOTICE_SENDER || self.store.user(username)?.is_some() {
            return Err(taken());
        }
        let pw = password.to_string();
        let cost = self.hash_cost;
        let hash = password_work(move || auth::hash_password(&pw, cost))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                ServiceError::internal()
            })?;
        let rec = UserRecord {
            password_hash: hash,
            created_ms: self.clock.now_ms(),
            token_epoch: 0,
            receipts_off: false,
            disabled: false,
        };
        if !self.store.create_user(username, &rec)? {
            return Err(taken());
        }
        self.durable().await
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device: &str,
    ) -> ServiceResult<Authed> {
        validate::device(device)?;
        let bad = || {
            ServiceError::new(
                ErrorCode::InvalidCredentials,
                "unknown user or wrong password",
            )
        };
        let user = if validate::username(username).is_ok() {
            self.store.user(username)?
        } else {
            None
        };
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let (dummy, cost) = (self.dummy_hash.clone(), self.hash_cost);
        let pw = password.to_string();
        let ok = password_work(move || {
            let phc = phc.unwrap_or_else(|| {
                dummy
                    .get_or_init(|| {
                        auth::hash_password("tern-dummy-password", cost).unwrap_or_default()
                    })
                    .clone()
            });
            auth::verify_password(&pw, &phc)
        })
        .await?;
        let Some(user) = user.filter(|_| ok) else {
            return Err(bad());
        };
        if user.disabled {
            return Err(ServiceError::new(
                ErrorCode::InvalidCredentials,
                "this account is disabled",
            ));
        }
        let now = self.clock.now_ms();
        let mut place = Place { gen: 0, parent: 0 };
        let dev = self.devices.update(username, device, |dev| {
            dev.last_login_ms = now;
            place = rotation::login(dev);
            Ok::<_, ServiceError>(true)
        })?;
        // The token's generation is durable before the token leaves.
        self.durable().await?;
        Ok(self.issue(username, device, user.token_epoch, &dev, place))
    }

    fn issue(
        &self,
        user: &str,
        device: &str,
        user_epoch: u64,
        dev: &DeviceRecord,
        place: Place,
    ) -> Authed {
        let expires_ms = self.clock.now_ms().saturating_add(self.token_ttl_ms);
        let token = self.signer.issue(TokenClaims {
            user: user.to_string(),
            device: device.to_string(),
            expires_ms,
            user_epoch,
            device_epoch: dev.token_epoch,
            gen: place.gen,
            parent_gen: place.parent,
            ..Default::default()
        });
        Authed {
            user: user.to_string(),
            device: device.to_string(),
            token,
            expires_ms,
            acked_inbox_seq: dev.acked_inbox_seq,
        }
    }

    /// Resume: checks the token, lets `admit` refuse the (user, device) before anything
    /// changes (the session cap), then rotates (docs/PROTOCOL.md 5.3): the answer carries
    /// a new token, and the device's rotation state is durable before it returns. A token
    /// that was already rotated out revokes every token of its device (durably) and is
    /// refused with TOKEN_REVOKED; [`Refused::reused`] then names the device, whose live
    /// sessions the caller closes.
    pub async fn resume(
        &self,
        token: &str,
        admit: impl FnOnce(&str, &str) -> ServiceResult<()>,
    ) -> Result<Authed, Refused> {
        let claims = self
            .signer
            .verify(token, self.clock.now_ms())
            .map_err(|e| match e {
                TokenError::Invalid => {
                    ServiceError::new(ErrorCode::InvalidToken, "token is not valid here")
                }
                TokenError::Expired => {
                    ServiceError::new(ErrorCode::TokenExpired, "token expired; log in again")
                }
            })?;
        let revoked =
            || ServiceError::new(ErrorCode::TokenRevoked, "token was revoked; log in again");
        let user = self
            .store
            .user(&claims.user)?
            .ok_or_else(|| ServiceError::new(ErrorCode::InvalidToken, "token is not valid here"))?;
        if user.token_epoch != claims.user_epoch || user.disabled {
            return Err(revoked().into());
        }
        admit(&claims.user, &claims.device)?;
        let now = self.clock.now_ms();
        let presented = Place {
            gen: claims.gen,
            parent: claims.parent_gen,
        };
        let mut outcome = None;
        let dev = self.devices.update(&claims.user, &claims.device, |dev| {
            if dev.token_epoch != claims.device_epoch {
                return Err(revoked());
            }
            let verdict = rotation::judge(dev, presented, now, self.rotation_grace_ms);
            if verdict == Verdict::Reuse {
                dev.token_epoch += 1;
                outcome = Some(Err(verdict));
            } else {
                dev.last_login_ms = now;
                outcome = Some(Ok(rotation::accept(dev, presented, verdict, now)));
            }
            Ok(true)
        })?;
        self.durable().await?;
        match outcome {
            Some(Ok(place)) => {
                Ok(self.issue(&claims.user, &claims.device, user.token_epoch, &dev, place))
            }
            _ => {
                tracing::warn!(
                    user = %claims.user,
                    device = %claims.device,
                    token_gen = claims.gen,
                    head_gen = dev.token_used,
                    "a rotated-out token was presented: all tokens of the device are revoked"
                );
                Err(Refused {
                    error: ServiceError::new(
                        ErrorCode::TokenRevoked,
                        "this token was already replaced by a newer one; as a precaution \
                         every token of this device is revoked: log in again",
                    ),
                    reused: Some((claims.user, claims.device)),
                })
            }
        }
    }

    /// Revokes one device's tokens, or every token of the user when `device` is None.
    /// Durable before it returns.
    pub async fn revoke(&self, user: &str, device: Option<&str>) -> ServiceResult<()> {
        match device {
            None => {
                let _w = self.user_writes.lock().unwrap();
                let mut rec = self
                    .store
                    .user(user)?
                    .ok_or_else(|| ServiceError::not_found("no such user"))?;
                rec.token_epoch += 1;
                self.store.put_user(user, &rec)?;
            }
            Some(d) => {
                validate::device(d)?;
                if self.devices.get(user, d)?.is_none() {
                    return Err(ServiceError::not_found(format!("no device {d}")));
                }
                self.devices.update(user, d, |rec| {
                    rec.token_epoch += 1;
                    Ok::<_, ServiceError>(true)
                })?;
            }
        }
        self.durable().await
    }

    /// The user's account settings after applying the fields that are set (none: just
    /// reads them). Durable before it returns.
    pub async fn user_settings(
        &self,
        user: &str,
        send_receipts: Option<bool>,
    ) -> ServiceResult<pb::UserSettings> {
        let rec = {
            let _w = self.user_writes.lock().unwrap();
            let mut rec = self
                .store
                .user(user)?
                .ok_or_else(|| ServiceError::not_found("no such user"))?;
            if let Some(on) = send_receipts {
                if rec.receipts_off == on {
                    rec.receipts_off = !on;
                    self.store.put_user(user, &rec)?;
                }
            }
            rec
        };
        self.durable().await?;
        Ok(pb::UserSettings {
            send_receipts: !rec.receipts_off,
        })
    }
}

#[cfg(test)]
mod tests;
