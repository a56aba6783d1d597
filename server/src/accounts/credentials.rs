//! Passwords (argon2id) and session tokens (HMAC-SHA256 over a small protobuf payload).
//!
//! Token = base64url(payload) "." base64url(HMAC-SHA256(key, payload)). The payload binds
//! the token to (user, device), the store epoch, an expiry, the user's and device's
//! token epochs at issue time (bumping either epoch in the store revokes it), and its
//! place in the device's rotation chain (see `rotation`).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The argon2id cost of new password hashes. Verification reads the cost from the stored
/// hash, so changing it affects only hashes made afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for HashCost {
    /// OWASP's argon2id recommendation (also the argon2 crate's default): 19 MiB, 2 passes.
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
        }
    }
}

/// Hashes a password with argon2id and a random salt (PHC string). CPU-heavy: call it off
/// the async threads.
pub(crate) fn hash_password(password: &str, cost: HashCost) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let params =
        Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string. CPU-heavy.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TokenClaims {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(string, tag = "2")]
    pub device: String,
    #[prost(string, tag = "3")]
    pub store_epoch: String,
    #[prost(uint64, tag = "4")]
    pub expires_ms: u64,
    #[prost(uint64, tag = "5")]
    pub user_epoch: u64,
    #[prost(uint64, tag = "6")]
    pub device_epoch: u64,
    /// The token's generation on its device (rotation.rs; 0: made before rotation).
    #[prost(uint64, tag = "7")]
    pub gen: u64,
    /// The generation of the token whose Resume this one answered (0: made by Login).
    #[prost(uint64, tag = "8")]
    pub parent_gen: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Malformed, wrongly signed, or from another data dir.
    Invalid,
    Expired,
}

pub(crate) struct TokenSigner {
    key: [u8; 32],
    store_epoch: String,
}

impl TokenSigner {
    pub(crate) fn new(key: [u8; 32], store_epoch: String) -> Self {
        Self { key, store_epoch }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    pub(crate) fn issue(&self, mut claims: TokenClaims) -> String {
        claims.store_epoch = self.store_epoch.clone();
        let payload = claims.encode_to_vec();
        let mut mac = self.mac();
        mac.update(&payload);
        let sig = mac.finalize().into_bytes();
        format!("{}.{}", B64.encode(&payload), B64.encode(sig))
    }

    /// Checks signature, store epoch and expiry. Revocation (epochs) is checked by the
    /// caller against the store.
    pub(crate) fn verify(&self, token: &str, now_ms: u64) -> Result<TokenClaims, TokenError> {
        let (p, s) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = B64.decode(p).map_err(|_| TokenError::Invalid)?;
        let sig = B64.decode(s).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let claims = TokenClaims::decode(payload.as_slice()).map_err(|_| TokenError::Invalid)?;
        if claims.store_epoch != self.store_epoch {
            return Err(TokenError::Invalid);
        }
        if claims.expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> TokenClaims {
        TokenClaims {
            user: "alice".into(),
            device: "phone".into(),
            expires_ms: exp,
            user_epoch: 1,
            device_epoch: 2,
            ..Default::default()
        }
    }

    #[test]
    fn token_round_trip() {
        let s = TokenSigner::new([7; 32], "ep".into());
        let t = s.issue(claims(1000));
        let c = s.verify(&t, 999).unwrap();
        assert_eq!(
            (c.user.as_str(), c.device.as_str(), c.device_epoch),
            ("alice", "phone", 2)
        );
    }

    #[test]
    fn expired_tampered_foreign_tokens_are_refused() {
        let s = TokenSigner::new([7; 32], "ep".into());
        let t = s.issue(claims(1000));
        assert_eq!(s.verify(&t, 1000), Err(TokenError::Expired));
        // Flip one character of the payload.
        let mut bytes = t.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.verify(std::str::from_utf8(&bytes).unwrap(), 0),
            Err(TokenError::Invalid)
        );
        // Another key, another data dir.
        assert_eq!(
            TokenSigner::new([8; 32], "ep".into()).verify(&t, 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            TokenSigner::new([7; 32], "other".into()).verify(&t, 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(s.verify("garbage", 0), Err(TokenError::Invalid));
        assert_eq!(s.verify("a.b.c", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn password_hash_verifies_only_the_right_password() {
        let h = hash_password("correct horse", HashCost::default()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn hash_cost_is_recorded_and_verification_reads_it_from_the_hash() {
        let cheap = HashCost {
            memory_kib: 64,
            iterations: 1,
        };
        let h = hash_password("pw", cheap).unwrap();
        assert!(h.contains("m=64,t=1,p=1"), "{h}");
        assert!(verify_password("pw", &h));
        assert!(!verify_password("pW", &h));
        let default = hash_password("pw", HashCost::default()).unwrap();
        assert!(default.contains("m=19456,t=2,p=1"), "{default}");
    }
}
