//! The audit details of a search, summarised so they always fit the store's cap on details
//! (`gallery::audit::MAX_DETAILS_BYTES`): a search is never refused because of its own audit entry.
//!
//! A crowd photo searched in investigation mode lists up to 50 faces × 200 candidates; written whole, its details
//! outgrew the cap and the investigator got 422 `invalid_audit_entry` instead of an answer. The entry keeps every
//! count, and as many of each face's top candidates (best first) as fit, saying when it cut.

use serde_json::{json, Value};

use super::search::{FaceSearch, SearchRequest};
use crate::gallery::audit::MAX_DETAILS_BYTES;

/// Room left under the cap for what canonical rendering may add (key order, escapes).
const MARGIN_BYTES: usize = 512;
/// Watchlist names listed at most, and characters kept of each.
const MAX_WATCHLISTS: usize = 50;
const MAX_NAME_CHARS: usize = 64;

/// The details of a search's audit entry: who was asked for (mode, watchlists, k), what came back (subject ids per
/// face, best first) and the photo's sha256; never embeddings or photos.
pub(super) fn search_details(request: &SearchRequest, faces: &[FaceSearch], photo_sha256: Option<&str>) -> Value {
    let candidates: Vec<Vec<i64>> = faces.iter().map(|f| f.candidates.iter().map(|c| c.subject_id).collect()).collect();
    let full = json!({
        "mode": request.mode,
        "watchlists": request.watchlists,
        "k": request.k,
        "faces": faces.len(),
        "candidates": candidates,
        "photo_sha256": photo_sha256,
    });
    let budget = MAX_DETAILS_BYTES - MARGIN_BYTES;
    if rendered_len(&full) <= budget {
        return full;
    }
    let watchlists = request.watchlists.as_ref().map(|names| {
        names.iter().take(MAX_WATCHLISTS).map(|n| n.chars().take(MAX_NAME_CHARS).collect::<String>()).collect::<Vec<_>>()
    });
    let total: usize = candidates.iter().map(Vec::len).sum();
    let longest = candidates.iter().map(Vec::len).max().unwrap_or(0);
    // Fewer candidates per face, then fewer faces, until it fits; one candidate of no face always does.
    let mut per_face = longest;
    let mut listed_faces = candidates.len();
    loop {
        let listed: Vec<&[i64]> = candidates.iter().take(listed_faces).map(|c| &c[..c.len().min(per_face)]).collect();
        let summary = json!({
            "mode": request.mode,
            "watchlists": watchlists,
            "watchlists_requested": request.watchlists.as_ref().map(Vec::len),
            "k": request.k,
            "faces": faces.len(),
            "candidates": listed,
            "candidates_total": total,
            "candidates_per_face_listed": per_face,
            "faces_listed": listed_faces,
            "truncated": true,
            "photo_sha256": photo_sha256,
        });
        if rendered_len(&summary) <= budget || (per_face == 0 && listed_faces == 0) {
            return summary;
        }
        if per_face > 1 {
            per_face /= 2;
        } else if listed_faces > 0 {
            listed_faces /= 2;
        } else {
            per_face = 0;
        }
    }
}

fn rendered_len(value: &Value) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::search::{Candidate, SearchMode};

    fn face(subjects: std::ops::Range<i64>) -> FaceSearch {
        let candidates = subjects
            .enumerate()
            .map(|(i, subject_id)| Candidate {
                rank: i + 1,
                subject_id,
                display_name: String::new(),
                external_ref: None,
                watchlist: String::new(),
                template_id: subject_id,
                similarity: 0.5,
                decision_score: Some(0.5),
                fpir: None,
                fpir_extrapolated: false,
                alert: false,
                hit_id: None,
            })
            .collect();
        FaceSearch { face: None, searched: true, skipped_reason: None, candidates }
    }

    #[test]
    fn a_small_search_is_recorded_whole() {
        let request = SearchRequest { mode: SearchMode::Investigation, k: Some(3), ..Default::default() };
        let details = search_details(&request, &[face(1..4), face(10..12)], Some("ab"));
        assert_eq!(details["candidates"], json!([[1, 2, 3], [10, 11]]));
        assert!(details.get("truncated").is_none());
    }

    #[test]
    fn a_crowd_investigation_is_summarised_under_the_cap_best_candidates_first() {
        let request = SearchRequest {
            mode: SearchMode::Investigation,
            k: Some(200),
            watchlists: Some((0..500).map(|i| format!("{i}-{}", "w".repeat(300))).collect()),
            ..Default::default()
        };
        let big = 1_000_000_000_000i64;
        let faces: Vec<FaceSearch> = (0..64).map(|f| face(big + f * 1000..big + f * 1000 + 200)).collect();
        let details = search_details(&request, &faces, Some(&"f".repeat(64)));
        let text = crate::gallery::audit::canonical_json(&details);
        assert!(text.len() <= MAX_DETAILS_BYTES, "{} bytes", text.len());
        assert_eq!(details["truncated"], true);
        assert_eq!(details["faces"], 64);
        assert_eq!(details["candidates_total"], 64 * 200);
        assert_eq!(details["watchlists_requested"], 500);
        let listed = details["candidates"].as_array().unwrap();
        assert!(!listed.is_empty());
        // Each face keeps its best candidates, in rank order.
        assert_eq!(listed[1][0], big + 1000);
        assert!(!listed[0].as_array().unwrap().is_empty());
    }
}
