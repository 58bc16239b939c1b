//! API keys: how a key is made (a short public id and a secret from the operating system's randomness, shown
//! once), how it is kept (argon2id only), how a presented key becomes a `Principal`, and the per-key rate limit.
//!
//! A key reads `fmk_<id>_<secret>`: 12 hex digits of public id, then 64 of secret. Argon2id costs tens of
//! milliseconds by design, so a key verified once is remembered by the SHA-256 of the whole presented key; the
//! key's record (revoked? expired?) is still read from the store on every request, so a revocation takes effect
//! at once on every node that shares the store.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::access::Permission;
use super::{Action, Principal, Role, ServiceError, WatchlistService};
use crate::gallery::{ApiKey, GalleryError, NewApiKey};

const KEY_PREFIX: &str = "fmk_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// Verified presentations remembered; past this the memory is cleared (a flood of distinct valid keys is not a
/// realistic load, and clearing only costs re-verification).
const VERIFIED_CAPACITY: usize = 10_000;
const MAX_PURPOSE_CHARS: usize = 200;

/// Rate limits per key (`[access]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Requests per second each key may make on average (default 50; a checkpoint lane makes a few).
    pub rate_per_second: f64,
    /// Requests a key may make at once after being idle (default 100).
    pub rate_burst: f64,
    /// Whether `/metrics` answers without a key (default false: it needs an admin key).
    pub open_metrics: bool,
    /// Whether `/v1/openapi.json` answers without a key (default true: it holds no data).
    pub open_openapi: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig { rate_per_second: 50.0, rate_burst: 100.0, open_metrics: false, open_openapi: true }
    }
}

/// Why a presented key was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key was presented.
    Missing,
    /// Not of the form `fmk_<id>_<secret>`.
    Malformed,
    /// No such key, or the secret is wrong.
    Unknown,
    Revoked,
    Expired,
}

impl AuthFailure {
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_key",
            AuthFailure::Malformed => "malformed_key",
            AuthFailure::Unknown => "invalid_key",
            AuthFailure::Revoked => "key_revoked",
            AuthFailure::Expired => "key_expired",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "an api key is required: send `Authorization: Bearer fmk_…`",
            AuthFailure::Malformed => "the api key is malformed: expected `fmk_<id>_<secret>`",
            AuthFailure::Unknown => "the api key is not known, or its secret is wrong",
            AuthFailure::Revoked => "the api key was revoked",
            AuthFailure::Expired => "the api key has expired",
        }
    }
}

/// A key to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Who holds it; recorded with every use.
    pub name: String,
    pub role: Role,
    /// Limit the key to these watchlists (default: all).
    #[serde(default)]
    pub watchlists: Option<Vec<String>>,
    /// RFC 3339; absent means the key does not expire.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A key as just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    pub key: ApiKey,
    /// The whole key to give its holder; it cannot be shown again.
    pub secret: String,
}

/// Makes the parts of a new key.
fn new_key_parts() -> Result<(String, String), ServiceError> {
    let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::Randomness(e.to_string()))?;
    let id = hex::encode(&bytes[..ID_BYTES]);
    let secret = format!("{KEY_PREFIX}{id}_{}", hex::encode(&bytes[ID_BYTES..]));
    Ok((id, secret))
}

fn hash_secret(secret: &str) -> Result<String, ServiceError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ServiceError::Randomness(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServiceError::KeyHash(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::KeyHash(e.to_string()))
}

/// The public id inside a presented key, if it has the key's shape.
fn parse_key(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 2 * ID_BYTES) && hex_of(secret, 2 * SECRET_BYTES)).then_some(id)
}

/// RFC 3339 in UTC (`…Z`), as the store writes every time.
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok().or_else(|| humantime::parse_rfc3339_weak(text).ok())
}

/// Checks a stated purpose: printable, bounded. Blank means none.
pub fn validate_purpose(purpose: Option<String>) -> Result<Option<String>, ServiceError> {
    let Some(text) = purpose.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_PURPOSE_CHARS || text.chars().any(char::is_control) {
        return Err(ServiceError::InvalidPurpose { max_chars: MAX_PURPOSE_CHARS });
    }
    Ok(Some(text))
}

/// Keys verified so far, and each key's token bucket.
#[derive(Debug, Default)]
pub(super) struct KeyGate {
    verified: Mutex<HashMap<[u8; 32], String>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl KeyGate {
    fn verify(&self, presented: &str, key: &ApiKey) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if self.verified.lock().get(&digest).is_some_and(|id| *id == key.id) {
            return true;
        }
        let valid = PasswordHash::new(&key.secret_hash)
            .is_ok_and(|hash| Argon2::default().verify_password(presented.as_bytes(), &hash).is_ok());
        if valid {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(digest, key.id.clone());
        }
        valid
    }

    /// Takes one token from the key's bucket, or says how long until one is there.
    fn take(&self, key_id: &str, config: &AccessConfig) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket { tokens: config.rate_burst, updated: now });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * config.rate_per_second;
        bucket.tokens = (bucket.tokens + refill).min(config.rate_burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / config.rate_per_second.max(f64::MIN_POSITIVE)))
        }
    }
}

impl WatchlistService {
    /// Turns a presented key into its holder, or says why not. Every request of every edge starts here.
    pub fn authenticate(&self, presented: Option<&str>, purpose: Option<String>) -> Result<Principal, ServiceError> {
        let presented = presented.map(str::trim).filter(|p| !p.is_empty()).ok_or(AuthFailure::Missing)?;
        let id = parse_key(presented).ok_or(AuthFailure::Malformed)?;
        let key = match self.store.get_key(id) {
            Ok(key) => key,
            Err(GalleryError::NotFound { .. }) => return Err(AuthFailure::Unknown.into()),
            Err(error) => return Err(error.into()),
        };
        if !self.keys.verify(presented, &key) {
            return Err(AuthFailure::Unknown.into());
        }
        if key.revoked_at.is_some() {
            return Err(AuthFailure::Revoked.into());
        }
        if key.expires_at.as_deref().and_then(parse_time).is_some_and(|at| at <= SystemTime::now()) {
            return Err(AuthFailure::Expired.into());
        }
        let role: Role = key.role.parse().map_err(|_| AuthFailure::Unknown)?;
        if role == Role::System {
            return Err(AuthFailure::Unknown.into());
        }
        self.keys
            .take(&key.id, &self.access)
            .map_err(|wait| ServiceError::RateLimited { retry_after_s: wait.as_secs().max(1) })?;
        Ok(Principal::key_holder(&key.id, &key.name, role, key.watchlists, validate_purpose(purpose)?))
    }

    /// Makes a key; its secret is in the answer and nowhere else.
    pub fn create_key(&self, request: KeyRequest, caller: &Principal) -> Result<IssuedKey, ServiceError> {
        caller.require(Permission::ManageKeys)?;
        self.check_key_request(&request, caller)?;
        let (id, secret) = new_key_parts()?;
        let new = NewApiKey {
            id,
            name: request.name,
            role: request.role.as_str().to_owned(),
            watchlists: request.watchlists,
            expires_at: request.expires_at.as_deref().and_then(parse_time).map(|at| humantime::format_rfc3339_millis(at).to_string()),
            secret_hash: hash_secret(&secret)?,
            created_by: caller.actor(),
        };
        let key = self.store.create_key(new, &|key: &ApiKey| {
            caller.entry(Action::CreateKey, Some(format!("key/{}", key.id)), key_details(key))
        })?;
        Ok(IssuedKey { key, secret })
    }

    pub fn list_keys(&self, caller: &Principal) -> Result<Vec<ApiKey>, ServiceError> {
        caller.require(Permission::ManageKeys)?;
        let mut keys = self.store.list_keys()?;
        // An admin limited to some watchlists sees only the keys it could manage.
        keys.retain(|key| self.check_key_scope(key.watchlists.as_deref(), caller).is_ok());
        Ok(keys)
    }

    pub fn revoke_key(&self, id: &str, caller: &Principal) -> Result<ApiKey, ServiceError> {
        caller.require(Permission::ManageKeys)?;
        let key = self.store.get_key(id)?;
        self.check_key_scope(key.watchlists.as_deref(), caller)?;
        Ok(self.store.revoke_key(id, caller.entry(Action::RevokeKey, Some(format!("key/{id}")), json!({})))?)
    }

    /// Replaces a key with a new secret of the same name, role, watchlists and expiry; the old one stops working.
    pub fn rotate_key(&self, id: &str, caller: &Principal) -> Result<IssuedKey, ServiceError> {
        caller.require(Permission::ManageKeys)?;
        let old = self.store.get_key(id)?;
        self.check_key_scope(old.watchlists.as_deref(), caller)?;
        let (new_id, secret) = new_key_parts()?;
        let new = NewApiKey {
            id: new_id,
            name: old.name.clone(),
            role: old.role.clone(),
            watchlists: old.watchlists.clone(),
            expires_at: old.expires_at.clone(),
            secret_hash: hash_secret(&secret)?,
            created_by: caller.actor(),
        };
        let key = self.store.rotate_key(id, new, &|key: &ApiKey| {
            let mut details = key_details(key);
            details["replaces"] = json!(id);
            caller.entry(Action::RotateKey, Some(format!("key/{}", key.id)), details)
        })?;
        Ok(IssuedKey { key, secret })
    }

    fn check_key_request(&self, request: &KeyRequest, caller: &Principal) -> Result<(), ServiceError> {
        if !Role::KEY_ROLES.contains(&request.role) {
            return Err(ServiceError::InvalidRequest(format!("no key can hold role {}", request.role)));
        }
        crate::gallery::keys::validate_key_name(&request.name)?;
        if let Some(expires_at) = &request.expires_at {
            let at = parse_time(expires_at).ok_or_else(|| {
                ServiceError::InvalidRequest("expires_at must be an RFC 3339 time, e.g. 2027-06-30T00:00:00Z".into())
            })?;
            if at <= SystemTime::now() {
                return Err(ServiceError::InvalidRequest("expires_at lies in the past".into()));
            }
        }
        if let Some(names) = &request.watchlists {
            if names.is_empty() {
                return Err(ServiceError::InvalidRequest("a key limited to no watchlist could do nothing".into()));
            }
            for name in names {
                self.store.get_watchlist(name)?;
            }
        }
        self.check_key_scope(request.watchlists.as_deref(), caller)
    }

    /// An admin limited to some watchlists manages only keys limited to those.
    fn check_key_scope(&self, watchlists: Option<&[String]>, caller: &Principal) -> Result<(), ServiceError> {
        if caller.watchlists.is_none() {
            return Ok(());
        }
        let names = watchlists.ok_or(ServiceError::WatchlistForbidden { watchlist: "*".into() })?;
        names.iter().try_for_each(|name| caller.require_watchlist(name))
    }
}

fn key_details(key: &ApiKey) -> serde_json::Value {
    json!({ "name": key.name, "role": key.role, "watchlists": key.watchlists, "expires_at": key.expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_shape_and_their_hash_verifies_only_them() {
        let (id, secret) = new_key_parts().unwrap();
        assert_eq!(parse_key(&secret), Some(id.as_str()));
        assert_eq!(secret.len(), KEY_PREFIX.len() + 12 + 1 + 64);
        let hash = hash_secret(&secret).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&secret[KEY_PREFIX.len() + 13..]));
        let key = ApiKey {
            id: id.clone(),
            name: "desk".into(),
            role: "checkpoint".into(),
            watchlists: None,
            created_at: String::new(),
            created_by: String::new(),
            expires_at: None,
            revoked_at: None,
            replaces: None,
            secret_hash: hash,
        };
        let gate = KeyGate::default();
        assert!(gate.verify(&secret, &key));
        assert!(gate.verify(&secret, &key), "remembered");
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push(if secret.ends_with('0') { '1' } else { '0' });
        assert!(!gate.verify(&wrong, &key));
    }

    #[test]
    fn malformed_keys_are_told_apart_from_wrong_ones() {
        for bad in ["", "fmk_", "Bearer x", "fmk_0123456789ab_short", "fmk_0123456789ab", "xyz_0123456789ab_"] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_bucket_admits_its_burst_then_says_when_to_return() {
        let gate = KeyGate::default();
        let config = AccessConfig { rate_per_second: 1.0, rate_burst: 3.0, ..AccessConfig::default() };
        for _ in 0..3 {
            gate.take("k", &config).unwrap();
        }
        let wait = gate.take("k", &config).unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1), "{wait:?}");
        gate.take("other", &config).unwrap();
    }

    #[test]
    fn purposes_are_printable_and_bounded() {
        assert_eq!(validate_purpose(Some("  case 2026/117 ".into())).unwrap(), Some("case 2026/117".into()));
        assert_eq!(validate_purpose(Some("   ".into())).unwrap(), None);
        assert!(validate_purpose(Some("case\nrole: admin".into())).is_err());
        assert!(validate_purpose(Some("x".repeat(201))).is_err());
    }
}
