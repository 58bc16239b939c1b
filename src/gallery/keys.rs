//! API keys as the store keeps them: never the secret, only its slow hash, with the role, the watchlists a key is
//! limited to, its expiry and its revocation; and the `KeyStore` half of the store contract that holds them.

use serde::{Deserialize, Serialize};

use super::error::{GalleryError, InvalidKind};
use super::model::AuditEntry;
use super::store::AuditFor;

/// One API key. The secret is shown once at creation and never stored; `secret_hash` is its argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// Short public id, part of the key itself and recorded in the audit trail with every use.
    pub id: String,
    /// Who holds the key, e.g. `gate-3 officer desk` or a person's name.
    pub name: String,
    /// `checkpoint`, `investigator`, `enroller`, `admin` or `auditor`.
    pub role: String,
    /// The watchlists the key may touch; absent means every watchlist.
    pub watchlists: Option<Vec<String>>,
    /// RFC 3339.
    pub created_at: String,
    /// The actor that created the key.
    pub created_by: String,
    /// RFC 3339; absent means the key does not expire.
    pub expires_at: Option<String>,
    /// RFC 3339; set once, never cleared.
    pub revoked_at: Option<String>,
    /// The key this one replaced when it was made by a rotation.
    pub replaces: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub secret_hash: String,
}

/// What a store needs to create a key; the service makes the id and the hash.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: String,
    pub watchlists: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub secret_hash: String,
    pub created_by: String,
}

/// The keys half of the store contract. Every change appends its audit entry in the same transaction.
pub trait KeyStore: Send + Sync {
    /// Refuses an id that exists (`duplicate_key`).
    fn create_key(&self, new: NewApiKey, audit: AuditFor<'_, ApiKey>) -> Result<ApiKey, GalleryError>;
    /// `key_not_found` when no key has this id.
    fn get_key(&self, id: &str) -> Result<ApiKey, GalleryError>;
    /// Oldest first.
    fn list_keys(&self) -> Result<Vec<ApiKey>, GalleryError>;
    /// Marks the key revoked now; `key_revoked` when it already was.
    fn revoke_key(&self, id: &str, audit: AuditEntry) -> Result<ApiKey, GalleryError>;
    /// Revokes `id` and creates `new` in its place (same name, role and watchlists, `replaces = id`) in one
    /// transaction, so there is never a moment with both or neither.
    fn rotate_key(&self, id: &str, new: NewApiKey, audit: AuditFor<'_, ApiKey>) -> Result<ApiKey, GalleryError>;
}

const MAX_KEY_NAME_CHARS: usize = 100;

/// Key names are shown in the audit trail next to every use: printable, no control characters, 1..=100 chars.
pub fn validate_key_name(name: &str) -> Result<(), GalleryError> {
    let count = name.chars().count();
    if name.trim().is_empty() || count > MAX_KEY_NAME_CHARS || name.chars().any(char::is_control) || name.trim() != name
    {
        return Err(GalleryError::invalid(
            InvalidKind::KeyName,
            format!("key name must be 1..={MAX_KEY_NAME_CHARS} printable characters without surrounding spaces"),
        ));
    }
    Ok(())
}

/// Public ids are what `facematch keys` prints and what the audit trail records: 12 lowercase hex digits.
pub fn validate_key_id(id: &str) -> Result<(), GalleryError> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(GalleryError::invalid(InvalidKind::KeyId, "key id must be 12 lowercase hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_printable_and_bounded() {
        validate_key_name("gate 3 · desk A").unwrap();
        for bad in ["", " ", "a\nrole: admin", " padded", &"x".repeat(101)] {
            assert_eq!(validate_key_name(bad).unwrap_err().code(), "invalid_key_name", "{bad:?}");
        }
    }

    #[test]
    fn key_ids_are_twelve_hex_digits() {
        validate_key_id("0123456789ab").unwrap();
        for bad in ["", "0123456789aB", "0123456789abc", "0123456789a_", "ghijklmnopqr"] {
            assert!(validate_key_id(bad).is_err(), "{bad:?}");
        }
    }
}
