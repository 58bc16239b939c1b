//! Tamper-evident audit trail: canonical row serialisation, the SHA-256 hash chain and its verification.
//!
//! Each row stores `hash = sha256(prev_hash_hex || "\n" || canonical(row))`. The canonical form is a compact JSON
//! array with object keys sorted recursively, so it survives a move to a store that reorders JSON keys (PostgreSQL
//! `jsonb`). The chain proves that no row was edited, inserted or removed in the middle; truncating the newest rows
//! is only detectable against a head hash kept elsewhere (see `docs/gallery-store.md`).

use sha2::{Digest, Sha256};

use super::error::{GalleryError, InvalidKind};
use super::model::AuditEntry;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bumped only if the canonical form changes; it is part of every hashed row.
const CANONICAL_VERSION: u64 = 1;

/// Keeps audit rows small and photo-free: a base64 photo or an embedding would not fit.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

const MAX_FIELD_CHARS: usize = 512;

/// Writes `value` as compact JSON with object keys sorted at every depth.
pub fn write_canonical_json(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (position, key) in keys.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical_json(&serde_json::Value::String(key.clone()), out);
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical_json(inner, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        // Scalars have exactly one compact serde_json rendering, and serialising a Value cannot fail.
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical_json(value, &mut out);
    out
}

/// The hashed fields of one row, as stored: `details_json` is the canonical text written at append time and is
/// hashed verbatim, so verification never depends on re-parsing floats exactly.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub id: i64,
    pub at: &'a str,
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub purpose: Option<&'a str>,
    pub target: Option<&'a str>,
    pub details_json: &'a str,
}

/// The bytes that are hashed for one row (everything except the hashes themselves).
pub fn canonicalise_row(fields: &ChainFields<'_>) -> String {
    let text = |value: &str| serde_json::Value::String(value.to_owned());
    let optional = |value: Option<&str>| value.map_or(serde_json::Value::Null, text);
    let head = serde_json::Value::Array(vec![
        CANONICAL_VERSION.into(),
        fields.id.into(),
        text(fields.at),
        text(fields.actor),
        text(fields.role),
        text(fields.action),
        optional(fields.purpose),
        optional(fields.target),
    ]);
    let mut out = canonical_json(&head);
    // Splice the details in as the last array element.
    out.pop();
    out.push(',');
    out.push_str(fields.details_json);
    out.push(']');
    out
}

/// Chains one row onto `prev_hash`.
pub fn hash_row(prev_hash: &str, fields: &ChainFields<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonicalise_row(fields).as_bytes());
    hex::encode(hasher.finalize())
}

/// Rejects entries that are empty where they must not be, or large enough to smuggle biometric data; returns the
/// details' canonical text, which is what a store keeps and hashes, so it is rendered once.
pub fn validate_entry(entry: &AuditEntry) -> Result<String, GalleryError> {
    let required = [
        ("actor", &entry.actor),
        ("role", &entry.role),
        ("action", &entry.action),
    ];
    for (field, value) in required {
        if value.trim().is_empty() || value.chars().count() > MAX_FIELD_CHARS {
            return Err(GalleryError::invalid(
                InvalidKind::AuditEntry,
                format!("audit {field} must be 1..={MAX_FIELD_CHARS} characters"),
            ));
        }
    }
    for (field, value) in [("purpose", &entry.purpose), ("target", &entry.target)] {
        if value
            .as_ref()
            .is_some_and(|text| text.chars().count() > MAX_FIELD_CHARS)
        {
            return Err(GalleryError::invalid(
                InvalidKind::AuditEntry,
                format!("audit {field} must be at most {MAX_FIELD_CHARS} characters"),
            ));
        }
    }
    let details_json = canonical_json(&entry.details);
    let details_len = details_json.len();
    if details_len > MAX_DETAILS_BYTES {
        return Err(GalleryError::invalid(
            InvalidKind::AuditEntry,
            format!("audit details are {details_len} bytes, limit {MAX_DETAILS_BYTES} (no embeddings or photos)"),
        ));
    }
    Ok(details_json)
}

/// Walks rows in id order and names the first one whose link or hash does not hold.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_prev: String,
    checked: usize,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_prev: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn check(
        &mut self,
        fields: &ChainFields<'_>,
        prev_hash: &str,
        hash: &str,
    ) -> Result<(), GalleryError> {
        if prev_hash != self.expected_prev {
            return Err(GalleryError::AuditChainBroken {
                row_id: fields.id,
                reason:
                    "prev_hash does not match the previous row (row removed, inserted or reordered)"
                        .to_owned(),
            });
        }
        let recomputed = hash_row(prev_hash, fields);
        if recomputed != hash {
            return Err(GalleryError::AuditChainBroken {
                row_id: fields.id,
                reason: "stored hash does not match the row contents (row edited)".to_owned(),
            });
        }
        self.expected_prev = recomputed;
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> usize {
        self.checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A row as a store would keep it.
    #[derive(Debug, Clone)]
    struct StoredRow {
        id: i64,
        at: String,
        actor: String,
        action: String,
        details_json: String,
        prev_hash: String,
        hash: String,
    }

    impl StoredRow {
        fn fields(&self) -> ChainFields<'_> {
            ChainFields {
                id: self.id,
                at: &self.at,
                actor: &self.actor,
                role: "analyst",
                action: &self.action,
                purpose: Some("case 2024/117"),
                target: None,
                details_json: &self.details_json,
            }
        }
    }

    fn chain(details: &[serde_json::Value]) -> Vec<StoredRow> {
        let mut prev = GENESIS_HASH.to_owned();
        let mut rows = Vec::new();
        for (index, detail) in details.iter().enumerate() {
            let mut row = StoredRow {
                id: index as i64 + 1,
                at: format!("2024-05-01T10:00:0{index}.000Z"),
                actor: "alice".to_owned(),
                action: "search".to_owned(),
                details_json: canonical_json(detail),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = hash_row(&prev, &row.fields());
            prev = row.hash.clone();
            rows.push(row);
        }
        rows
    }

    fn verify(rows: &[StoredRow]) -> Result<usize, GalleryError> {
        let mut verifier = ChainVerifier::default();
        for row in rows {
            verifier.check(&row.fields(), &row.prev_hash, &row.hash)?;
        }
        Ok(verifier.checked())
    }

    fn broken_row(result: Result<usize, GalleryError>) -> i64 {
        match result {
            Err(GalleryError::AuditChainBroken { row_id, .. }) => row_id,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[1,{"y":2,"x":3}],"c":"é\n"}}"#)
                .expect("fixture parses");
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "a": {"c":"é\n", "z":[1,{"x":3,"y":2}]}, "b": 1 }"#)
                .expect("fixture parses");
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"é\n","z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_row_is_a_json_array_ending_in_the_details() {
        let row = &chain(&[json!({"k": 10, "a": [true]})])[0];
        let parsed: serde_json::Value =
            serde_json::from_str(&canonicalise_row(&row.fields())).expect("valid json");
        let items = parsed.as_array().expect("an array");
        assert_eq!(items.len(), 9);
        assert_eq!(items[1], json!(1));
        assert_eq!(items[8], json!({"a": [true], "k": 10}));
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(&[
            json!({"k": 10, "score": 0.30000000000000004}),
            json!({}),
            json!(null),
        ]);
        assert_eq!(verify(&rows).expect("intact chain verifies"), 3);
    }

    #[test]
    fn edited_removed_and_relinked_rows_are_named() {
        let rows = chain(&[json!({"k": 10}), json!({"k": 20}), json!({"k": 30})]);

        let mut edited = rows.clone();
        edited[1].actor = "mallory".to_owned();
        assert_eq!(broken_row(verify(&edited)), 2);

        let mut edited_details = rows.clone();
        edited_details[2].details_json = r#"{"k":31}"#.to_owned();
        assert_eq!(broken_row(verify(&edited_details)), 3);

        let removed = vec![rows[0].clone(), rows[2].clone()];
        assert_eq!(broken_row(verify(&removed)), 3);

        // Re-hashing the edited row alone does not help: the next row still links to the old hash.
        let mut rehashed = rows.clone();
        rehashed[1].actor = "mallory".to_owned();
        rehashed[1].hash = hash_row(&rehashed[1].prev_hash, &rehashed[1].fields());
        assert_eq!(broken_row(verify(&rehashed)), 3);
    }

    #[test]
    fn oversized_details_are_refused() {
        let entry = |details| AuditEntry {
            actor: "alice".to_owned(),
            role: "analyst".to_owned(),
            action: "enroll".to_owned(),
            purpose: None,
            target: None,
            details,
        };
        let photo_like = "A".repeat(MAX_DETAILS_BYTES + 1);
        let error = validate_entry(&entry(json!({ "photo": photo_like }))).expect_err("too large");
        assert_eq!(error.code(), "invalid_audit_entry");
        validate_entry(&entry(json!({"subject_id": 4}))).expect("small details pass");
        let mut blank = entry(json!({}));
        blank.actor = " ".to_owned();
        assert!(validate_entry(&blank).is_err());
    }
}
