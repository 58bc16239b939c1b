//! Input rules every gallery store enforces before touching the database, independent of the backend.

use super::audit::canonical_json;
use super::error::{GalleryError, InvalidKind};

const MAX_WATCHLIST_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 4096;
const MAX_DISPLAY_NAME_CHARS: usize = 256;
const MAX_EXTERNAL_REF_CHARS: usize = 128;
const MAX_MODEL_ID_CHARS: usize = 128;
const MAX_ACTOR_CHARS: usize = 256;
const MAX_METADATA_BYTES: usize = 64 * 1024;
const MAX_QUALITY_BYTES: usize = 16 * 1024;
/// Larger than any face embedding in use; guards against a photo or garbage being stored as an embedding.
pub const MAX_EMBEDDING_DIMENSION: usize = 4096;
/// A thumbnail is a small face crop, not the enrollment photo.
pub const MAX_THUMBNAIL_BYTES: usize = 512 * 1024;
pub const MAX_PER_PAGE: usize = 1000;

/// Slug: lowercase ASCII letters, digits, `-` and `_`, starting with a letter or digit.
pub fn validate_watchlist_name(name: &str) -> Result<(), GalleryError> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_well || !rest_ok || name.len() > MAX_WATCHLIST_NAME_CHARS {
        return Err(GalleryError::invalid(
            InvalidKind::WatchlistName,
            format!(
                "watchlist name {name:?} must be 1..={MAX_WATCHLIST_NAME_CHARS} of [a-z0-9_-], starting with a \
                 letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Longest retention a watchlist may set: a hundred years, beyond any legal period and far from overflow.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

pub fn validate_retention(retention_days: Option<u32>) -> Result<(), GalleryError> {
    match retention_days {
        Some(days) if days == 0 || days > MAX_RETENTION_DAYS => Err(GalleryError::invalid(
            InvalidKind::Retention,
            format!("retention_days {days} must lie between 1 and {MAX_RETENTION_DAYS}"),
        )),
        _ => Ok(()),
    }
}

pub fn validate_watchlist_fields(description: &str, alert_fpir: f64) -> Result<(), GalleryError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(GalleryError::invalid(
            InvalidKind::Description,
            format!("watchlist description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if !(alert_fpir.is_finite() && alert_fpir > 0.0 && alert_fpir < 1.0) {
        return Err(GalleryError::invalid(
            InvalidKind::AlertFpir,
            format!("alert_fpir {alert_fpir} must lie strictly between 0 and 1"),
        ));
    }
    Ok(())
}

pub fn validate_display_name(display_name: &str) -> Result<(), GalleryError> {
    if display_name.trim().is_empty() || display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(GalleryError::invalid(
            InvalidKind::DisplayName,
            format!("display_name must be 1..={MAX_DISPLAY_NAME_CHARS} characters and not blank"),
        ));
    }
    Ok(())
}

pub fn validate_external_ref(external_ref: Option<&str>) -> Result<(), GalleryError> {
    match external_ref {
        Some(text) if text.trim().is_empty() || text.chars().count() > MAX_EXTERNAL_REF_CHARS => {
            Err(GalleryError::invalid(
                InvalidKind::ExternalRef,
                format!(
                    "external_ref must be 1..={MAX_EXTERNAL_REF_CHARS} characters and not blank"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Returns the canonical text to store, so equal objects are stored identically.
pub fn canonicalise_metadata(metadata: &serde_json::Value) -> Result<String, GalleryError> {
    if !metadata.is_object() {
        return Err(GalleryError::invalid(
            InvalidKind::Metadata,
            "metadata must be a JSON object",
        ));
    }
    let text = canonical_json(metadata);
    if text.len() > MAX_METADATA_BYTES {
        return Err(GalleryError::invalid(
            InvalidKind::Metadata,
            format!(
                "metadata is {} bytes, limit {MAX_METADATA_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(text)
}

pub fn validate_model_id(model_id: &str) -> Result<(), GalleryError> {
    if model_id.trim().is_empty() || model_id.chars().count() > MAX_MODEL_ID_CHARS {
        return Err(GalleryError::invalid(
            InvalidKind::ModelId,
            format!("model_id must be 1..={MAX_MODEL_ID_CHARS} characters and not blank"),
        ));
    }
    Ok(())
}

pub fn validate_embedding(embedding: &[f32]) -> Result<(), GalleryError> {
    if embedding.is_empty() || embedding.len() > MAX_EMBEDDING_DIMENSION {
        return Err(GalleryError::invalid(
            InvalidKind::Embedding,
            format!(
                "embedding has {} values, expected 1..={MAX_EMBEDDING_DIMENSION}",
                embedding.len()
            ),
        ));
    }
    if let Some(position) = embedding.iter().position(|value| !value.is_finite()) {
        return Err(GalleryError::invalid(
            InvalidKind::Embedding,
            format!("embedding value {position} is not finite"),
        ));
    }
    Ok(())
}

/// Accepts either case and returns the lowercase form that is stored and compared.
pub fn normalise_photo_sha256(photo_sha256: &str) -> Result<String, GalleryError> {
    if photo_sha256.len() != 64 || !photo_sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(GalleryError::invalid(
            InvalidKind::PhotoSha256,
            "photo_sha256 must be 64 hexadecimal characters",
        ));
    }
    Ok(photo_sha256.to_ascii_lowercase())
}

/// Largest kept face region: a 512 px JPEG at quality 92 is far below it (`crate::face_region`).
pub const MAX_FACE_REGION_BYTES: usize = 2 * 1024 * 1024;

pub fn validate_face_region(jpeg: &[u8], geometry: &serde_json::Value) -> Result<(), GalleryError> {
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(GalleryError::invalid(InvalidKind::FaceRegion, "face region is not a JPEG"));
    }
    if jpeg.len() > MAX_FACE_REGION_BYTES {
        return Err(GalleryError::invalid(
            InvalidKind::FaceRegion,
            format!("face region is {} bytes, limit {MAX_FACE_REGION_BYTES}", jpeg.len()),
        ));
    }
    if !geometry.is_object() {
        return Err(GalleryError::invalid(InvalidKind::FaceRegion, "face region geometry is not a JSON object"));
    }
    Ok(())
}

pub fn validate_thumbnail(jpeg: &[u8]) -> Result<(), GalleryError> {
    // JPEG start-of-image marker; catches a PNG or raw pixels passed by mistake.
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(GalleryError::invalid(
            InvalidKind::Thumbnail,
            "thumbnail is not a JPEG",
        ));
    }
    if jpeg.len() > MAX_THUMBNAIL_BYTES {
        return Err(GalleryError::invalid(
            InvalidKind::Thumbnail,
            format!(
                "thumbnail is {} bytes, limit {MAX_THUMBNAIL_BYTES}",
                jpeg.len()
            ),
        ));
    }
    Ok(())
}

pub fn canonicalise_quality(quality: &serde_json::Value) -> Result<String, GalleryError> {
    let text = canonical_json(quality);
    if text.len() > MAX_QUALITY_BYTES {
        return Err(GalleryError::invalid(
            InvalidKind::Quality,
            format!("quality is {} bytes, limit {MAX_QUALITY_BYTES}", text.len()),
        ));
    }
    Ok(text)
}

pub fn validate_actor(enrolled_by: &str) -> Result<(), GalleryError> {
    if enrolled_by.trim().is_empty() || enrolled_by.chars().count() > MAX_ACTOR_CHARS {
        return Err(GalleryError::invalid(
            InvalidKind::Actor,
            format!("enrolled_by must be 1..={MAX_ACTOR_CHARS} characters and not blank"),
        ));
    }
    Ok(())
}

/// Turns a 1-based page into an SQL offset, refusing pages that cannot exist.
pub fn page_offset(page: usize, per_page: usize) -> Result<i64, GalleryError> {
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(GalleryError::invalid(
            InvalidKind::Pagination,
            format!("page must be >= 1 and per_page 1..={MAX_PER_PAGE}"),
        ));
    }
    (page - 1)
        .checked_mul(per_page)
        .and_then(|offset| i64::try_from(offset).ok())
        .ok_or_else(|| {
            GalleryError::invalid(
                InvalidKind::Pagination,
                format!("page {page} is out of range"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchlist_names_are_slugs() {
        for good in ["wanted", "missing-persons", "vip_2", "7"] {
            validate_watchlist_name(good).expect(good);
        }
        for bad in ["", "Wanted", "-x", "has space", "ümlaut", &"a".repeat(65)] {
            assert_eq!(
                validate_watchlist_name(bad).expect_err(bad).code(),
                "invalid_watchlist_name"
            );
        }
    }

    #[test]
    fn alert_fpir_must_be_a_rate() {
        validate_watchlist_fields("", 0.003).expect("0.003 is a rate");
        for bad in [0.0, 1.0, -0.1, f64::NAN, f64::INFINITY] {
            assert_eq!(
                validate_watchlist_fields("", bad)
                    .expect_err("not a rate")
                    .code(),
                "invalid_alert_fpir"
            );
        }
    }

    #[test]
    fn embeddings_must_be_finite_and_bounded() {
        validate_embedding(&[0.5; 512]).expect("512-d is fine");
        assert!(validate_embedding(&[]).is_err());
        assert!(validate_embedding(&[0.0, f32::NAN]).is_err());
        assert!(validate_embedding(&vec![0.0; MAX_EMBEDDING_DIMENSION + 1]).is_err());
    }

    #[test]
    fn photo_hash_is_normalised_to_lowercase() {
        let upper = "AB".repeat(32);
        assert_eq!(
            normalise_photo_sha256(&upper).expect("hex"),
            "ab".repeat(32)
        );
        assert!(normalise_photo_sha256("xyz").is_err());
        assert!(normalise_photo_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn pages_are_one_based_and_bounded() {
        assert_eq!(page_offset(1, 50).expect("first page"), 0);
        assert_eq!(page_offset(3, 20).expect("third page"), 40);
        assert!(page_offset(0, 20).is_err());
        assert!(page_offset(1, 0).is_err());
        assert!(page_offset(1, MAX_PER_PAGE + 1).is_err());
        assert!(page_offset(usize::MAX, MAX_PER_PAGE).is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(canonicalise_metadata(&serde_json::json!([1])).is_err());
        assert_eq!(
            canonicalise_metadata(&serde_json::json!({"b": 1, "a": 2})).expect("object"),
            r#"{"a":2,"b":1}"#
        );
    }
}
