//! What an operator does to accounts (the admin API, `http/admin`): list, look up,
//! disable and enable, set a password. Closing live sessions is the caller's part (the
//! hub is not a domain's to touch).

use super::{credentials as auth, password_work, Accounts};
use crate::error::{ServiceError, ServiceResult};
use crate::store::{DeviceRecord, UserRecord};
use crate::validate;

/// The reserved sender of operator notices (`d:<user>:system`, see docs/ADMIN_API.md):
/// nobody can register this name.
pub(crate) const NOTICE_SENDER: &str = "system";

impl Accounts {
    /// The user's record (never leaves the server as is: it holds the password hash).
    pub fn user_record(&self, user: &str) -> ServiceResult<UserRecord> {
        validate::username(user)?;
        self.store
            .user(user)?
            .ok_or_else(|| ServiceError::not_found(format!("no user {user}")))
    }

    /// The user's devices, by name.
    pub fn user_devices(&self, user: &str) -> ServiceResult<Vec<(String, DeviceRecord)>> {
        Ok(self.store.devices(user)?)
    }

    /// Users whose name starts with `prefix`, after `after`, at most `limit`.
    pub fn users_page(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> ServiceResult<Vec<(String, UserRecord)>> {
        Ok(self.store.users_page(prefix, after, limit)?)
    }

    /// Disables (no Login, no Resume: every token is revoked too) or enables the account.
    /// Durable before it returns; true when the state changed.
    pub async fn set_disabled(&self, user: &str, disabled: bool) -> ServiceResult<bool> {
        validate::username(user)?;
        let changed = {
            let _w = self.user_writes.lock().unwrap();
            let mut rec = self
                .store
                .user(user)?
                .ok_or_else(|| ServiceError::not_found(format!("no user {user}")))?;
            let changed = rec.disabled != disabled;
            if changed {
                rec.disabled = disabled;
                if disabled {
                    rec.token_epoch += 1;
                }
                self.store.put_user(user, &rec)?;
            }
            changed
        };
        self.durable().await?;
        Ok(changed)
    }

    /// Sets a new password (argon2id, as Register). Tokens stay valid: revoke them too
    /// to sign the user out. Durable before it returns.
    pub async fn set_password(&self, user: &str, password: &str) -> ServiceResult<()> {
        validate::username(user)?;
        validate::password(password)?;
        if self.store.user(user)?.is_none() {
            return Err(ServiceError::not_found(format!("no user {user}")));
        }
        let pw = password.to_string();
        let cost = self.hash_cost;
        let hash = password_work(move || auth::hash_password(&pw, cost))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                ServiceError::internal()
            })?;
        {
            let _w = self.user_writes.lock().unwrap();
            let mut rec = self
                .store
                .user(user)?
                .ok_or_else(|| ServiceError::not_found(format!("no user {user}")))?;
            rec.password_hash = hash;
            self.store.put_user(user, &rec)?;
        }
        self.durable().await
    }
}
