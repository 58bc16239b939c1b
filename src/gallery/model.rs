//! Gallery domain records (watchlists, subjects, templates, audit entries) and the inputs that create or change them.

use serde::{Deserialize, Deserializer, Serialize};

/// A named list of subjects; `id` doubles as the label the ANN index stores next to every template key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Watchlist {
    pub id: u32,
    /// Unique slug, e.g. `wanted`.
    pub name: String,
    pub description: String,
    /// Target false-positive identification rate for identification mode, e.g. 0.003.
    pub alert_fpir: f64,
    /// Days a subject stays on the watchlist after its record last changed; then it expires and is deleted with
    /// its templates and thumbnails (audited as `expire_subject`). `None`: kept until deleted.
    pub retention_days: Option<u32>,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWatchlist {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub alert_fpir: f64,
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// A change to a watchlist's settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchlistPatch {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub alert_fpir: Option<f64>,
    /// An explicit `null` removes the retention period (subjects are kept until deleted).
    #[serde(default, deserialize_with = "deserialize_present")]
    #[schema(value_type = Option<u32>)]
    pub retention_days: Option<Option<u32>>,
}

/// A subject whose watchlist's retention period has run out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExpiredSubject {
    pub subject_id: i64,
    pub watchlist: String,
    /// When its record last changed (RFC 3339): retention counts from there.
    pub updated_at: String,
    pub retention_days: u32,
}

/// A person on exactly one watchlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subject {
    pub id: i64,
    /// Watchlist name.
    pub watchlist: String,
    /// e.g. a notice number; unique within its watchlist.
    pub external_ref: Option<String>,
    pub display_name: String,
    /// Free JSON object.
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
    pub template_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewSubject {
    pub watchlist: String,
    #[serde(default)]
    pub external_ref: Option<String>,
    pub display_name: String,
    /// Must be a JSON object; absent means `{}`.
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
}

/// Partial update of a subject; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubjectPatch {
    #[serde(default)]
    pub display_name: Option<String>,
    /// `Some(None)` clears the reference; in JSON an explicit `null` clears it and an absent key keeps it.
    #[serde(default, deserialize_with = "deserialize_present")]
    pub external_ref: Option<Option<String>>,
    /// Replaces the whole metadata object (no merge), so removing a key is possible.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Name of the watchlist to move the subject to; moving changes the ANN label of its templates.
    #[serde(default)]
    pub watchlist: Option<String>,
}

/// Listing filter for the audit trail; `page` is 1-based. Every filter is optional and they combine with AND.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// Substring of the actor: a key's name or its id.
    #[serde(default)]
    pub actor: Option<String>,
    /// Exact action, e.g. `search`, `expire_subject`.
    #[serde(default)]
    pub action: Option<String>,
    /// Entries about this subject or one of its faces.
    #[serde(default)]
    pub subject: Option<i64>,
    /// Substring of the stated purpose, e.g. a case number.
    #[serde(default)]
    pub case: Option<String>,
    /// Oldest first instead of newest first (replaying the trail).
    #[serde(default)]
    pub oldest_first: bool,
    #[serde(default = "first_page")]
    pub page: usize,
    #[serde(default = "default_per_page")]
    pub per_page: usize,
}

impl AuditQuery {
    /// A page of the whole trail, newest first.
    pub fn page(page: usize, per_page: usize) -> AuditQuery {
        AuditQuery { page, per_page, ..AuditQuery::default() }
    }
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            since: None,
            until: None,
            actor: None,
            action: None,
            subject: None,
            case: None,
            oldest_first: false,
            page: first_page(),
            per_page: default_per_page(),
        }
    }
}

/// Listing filter for subjects; `page` is 1-based.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectQuery {
    #[serde(default)]
    pub watchlist: Option<String>,
    /// Case-insensitive (ASCII) substring of display_name or external_ref.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default = "first_page")]
    pub page: usize,
    #[serde(default = "default_per_page")]
    pub per_page: usize,
    /// Only subjects of these watchlists (a caller's key limits); set by the service, never by a client.
    #[serde(skip)]
    pub within: Option<Vec<String>>,
}

impl Default for SubjectQuery {
    fn default() -> Self {
        Self {
            within: None,
            watchlist: None,
            q: None,
            page: first_page(),
            per_page: default_per_page(),
        }
    }
}

/// One page of a listing; `page` is 1-based and `total` counts all matching rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
}

/// An enrolled face template; its embedding is carried separately because listings never need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    /// Never reused: it is the ANN index key.
    pub id: i64,
    pub subject_id: i64,
    pub model_id: String,
    pub dimension: usize,
    pub quality: serde_json::Value,
    /// Lowercase hex SHA-256 of the source photo bytes.
    pub photo_sha256: String,
    pub has_thumbnail: bool,
    /// Whether the enrolment's face region is kept, so that a migration to another model can remake it.
    pub face_kept: bool,
    pub enrolled_at: String,
    pub enrolled_by: String,
}

/// The enrolment face a new template is made from (see `crate::face_region`).
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateFace {
    /// Not kept: the gallery keeps no faces (`gallery.keep_enrolment_faces = false`), or a seeded template.
    NotKept,
    /// Keep this face region with the template: its JPEG and its geometry (`RegionGeometry` as JSON).
    Keep { jpeg: Vec<u8>, geometry: serde_json::Value },
    /// The kept face, by id, that another model's template was made from: a migration remaking it.
    Existing(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTemplate {
    pub subject_id: i64,
    pub model_id: String,
    /// Its length is the template dimension; it must match earlier templates of the same model id.
    pub embedding: Vec<f32>,
    pub quality: serde_json::Value,
    pub photo_sha256: String,
    pub thumbnail_jpeg: Option<Vec<u8>>,
    pub face: TemplateFace,
    pub enrolled_by: String,
}

impl NewTemplate {
    /// The same template with its enrolment face set.
    pub fn with_face(mut self, face: TemplateFace) -> NewTemplate {
        self.face = face;
        self
    }
}

/// What an operator did, to be appended to the tamper-evident audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub actor: String,
    pub role: String,
    /// e.g. `search`, `enroll`, `delete_subject`.
    pub action: String,
    /// Why, e.g. a case number.
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    /// Never embeddings or photos: the store refuses oversized details.
    #[serde(default = "empty_object")]
    pub details: serde_json::Value,
}

/// A stored audit row with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Lowercase hex; 64 zeros for the first row.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of `prev_hash` and the canonical serialisation of this row.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchlistStats {
    pub watchlist: String,
    pub label: u32,
    pub subjects: usize,
    pub templates: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelStats {
    pub model_id: String,
    pub dimension: usize,
    pub templates: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GalleryStats {
    pub watchlists: Vec<WatchlistStats>,
    pub models: Vec<ModelStats>,
    pub generation: u64,
    pub audit_entries: usize,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn first_page() -> usize {
    1
}

fn default_per_page() -> usize {
    50
}

/// Distinguishes an explicit JSON `null` (clear) from an absent key (keep), which plain `Option<Option<_>>` cannot.
fn deserialize_present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_distinguishes_null_from_absent_external_ref() {
        let absent: SubjectPatch =
            serde_json::from_str(r#"{"display_name":"A"}"#).expect("absent parses");
        assert_eq!(absent.external_ref, None);
        let cleared: SubjectPatch =
            serde_json::from_str(r#"{"external_ref":null}"#).expect("null parses");
        assert_eq!(cleared.external_ref, Some(None));
        let set: SubjectPatch =
            serde_json::from_str(r#"{"external_ref":"N-1"}"#).expect("value parses");
        assert_eq!(set.external_ref, Some(Some("N-1".to_owned())));
    }

    #[test]
    fn subject_query_defaults_to_first_page() {
        let query: SubjectQuery = serde_json::from_str("{}").expect("empty query parses");
        assert_eq!(query.page, 1);
        assert_eq!(query, SubjectQuery::default());
    }
}
