//! Search and 1:1 verification: every face of a probe photo against the watchlists, candidates aggregated per
//! subject (best template), scored with the calibrated FPIR, and thresholded per watchlist in identification mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::detect::{BoundingBox, Landmarks};
use crate::embed::{normalise, Embedding};
use crate::index::{LabelFilter, Neighbour, SearchParams};
use crate::pipeline::{Analysis, AnalyzeOptions, AnalyzedFace, StageTimings};
use crate::quality::FaceQuality;

use super::{Action, Engine, HitContext, Permission, Principal, ServiceError, WatchlistService};
use crate::gallery::HitSource;

/// NIST FRTE search modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Only candidates whose decision score passes their watchlist's threshold; "no match" is an answer.
    #[default]
    Identification,
    /// The top k subjects, no threshold, ranked for human review.
    Investigation,
}

/// Options of a search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SearchRequest {
    pub mode: SearchMode,
    /// Candidates per face (default: `gallery.default_k`).
    pub k: Option<usize>,
    /// Restrict to these watchlists (default: all).
    pub watchlists: Option<Vec<String>>,
    /// Faces whose detector score is below this are reported but not searched.
    pub min_quality: Option<f32>,
    /// Look for faces down to this size (photo pixels); crowd photos.
    pub min_face_px: Option<f32>,
    /// The checkpoint the search is made at, e.g. `gate 3` (printable, at most 100 characters): kept on the hits an
    /// identification search makes, and a filter of the review queues.
    pub checkpoint: Option<String>,
    /// The case the search is for (printable, at most 100 characters): kept on its hits, whose confirmed ones are
    /// exported per case.
    pub case: Option<String>,
}

/// Where a face is and how good it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FaceSummary {
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// Five points, `[x, y]` in photo pixels: eyes, nose tip, mouth corners.
    #[schema(value_type = Vec<Vec<f32>>)]
    pub landmarks: Landmarks,
    pub quality: FaceQuality,
}

impl From<&AnalyzedFace> for FaceSummary {
    fn from(f: &AnalyzedFace) -> Self {
        FaceSummary { bbox: f.detection.bbox, landmarks: f.detection.landmarks, quality: f.quality }
    }
}

/// A subject the face resembles: a candidate for a person to review, never a verdict.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub rank: usize,
    pub subject_id: i64,
    pub display_name: String,
    pub external_ref: Option<String>,
    pub watchlist: String,
    /// The subject's template that scored best.
    pub template_id: i64,
    /// Cosine similarity of the probe and that template.
    pub similarity: f32,
    /// The calibrated decision statistic (rank 1 only when the statistic looks at runner-ups).
    pub decision_score: Option<f32>,
    /// Estimated false-positive identification rate at this decision score and the current gallery size.
    pub fpir: Option<f64>,
    /// Whether that estimate lies beyond the impostor comparisons the calibration counted (a fitted tail or, for a
    /// search table, its resolution floor): an extrapolation, which a reviewer should weigh as such.
    pub fpir_extrapolated: bool,
    /// Whether the decision score reaches the watchlist's alert threshold.
    pub alert: bool,
    /// The hit this alert made (identification mode): the candidate waits for two reviewers at `/v1/hits/{id}`.
    pub hit_id: Option<i64>,
}

/// One probe face and its candidates.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FaceSearch {
    pub face: Option<FaceSummary>,
    pub searched: bool,
    pub skipped_reason: Option<String>,
    pub candidates: Vec<Candidate>,
}

/// The answer to a search.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    /// Audit trail entry of this search.
    pub search_id: i64,
    /// The hits this search made, one per alerting candidate (identification mode only), in answer order.
    pub hits: Vec<i64>,
    pub mode: SearchMode,
    pub model_id: String,
    pub gallery_templates: usize,
    pub decision_statistic: super::DecisionStatistic,
    pub faces: Vec<FaceSearch>,
    /// Faces found in the photo; more than `faces` holds when it held more than `gallery.max_faces_per_photo`.
    pub faces_detected: usize,
    /// Whether only the largest `gallery.max_faces_per_photo` faces were searched.
    pub faces_truncated: bool,
    pub timings_ms: StageTimings,
    pub search_ms: f64,
}

/// Where a 1:1 similarity falls against the model's verification threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyDecision {
    /// At or above the threshold.
    Match,
    /// Below it.
    NoMatch,
}

impl VerifyDecision {
    /// The one rule for every 1:1 comparison, the service's and the command line's.
    pub fn at(similarity: f32, threshold: f32) -> VerifyDecision {
        if similarity >= threshold {
            VerifyDecision::Match
        } else {
            VerifyDecision::NoMatch
        }
    }
}

/// The answer to a 1:1 comparison.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyResult {
    pub model_id: String,
    pub similarity: f32,
    pub threshold: f32,
    /// For a person to confirm, never a verdict.
    pub decision: VerifyDecision,
    pub subject_id: Option<i64>,
    pub template_id: Option<i64>,
}


impl WatchlistService {
    /// Searches every face of a photo.
    pub fn search_photo(&self, photo: &[u8], request: &SearchRequest, caller: &Principal) -> Result<SearchResult, ServiceError> {
        let analysis = self.analyze_probe(photo, request, caller)?;
        self.search_analysis(analysis, request, caller)
    }

    /// The search the caller may make: the mode's permission, a stated purpose for investigation mode, and the
    /// watchlists narrowed to the caller's key. Checked before any photo is analysed.
    pub fn authorize_search(&self, request: &SearchRequest, caller: &Principal) -> Result<SearchRequest, ServiceError> {
        match request.mode {
            SearchMode::Identification => caller.require(Permission::SearchIdentification)?,
            SearchMode::Investigation => {
                caller.require(Permission::SearchInvestigation)?;
                if caller.purpose.is_none() {
                    return Err(ServiceError::PurposeRequired);
                }
            }
        }
        super::hits::validate_context(request.checkpoint.as_deref(), request.case.as_deref())?;
        let watchlists = caller.search_scope(request.watchlists.as_deref())?;
        Ok(SearchRequest { watchlists, ..request.clone() })
    }

    /// The CPU-heavy half of [`Self::search_photo`]: faces, quality and embeddings of the probe photo. The HTTP
    /// layer runs it on an analysis thread and the rest (index, store reads, audit commit) on the blocking pool, so
    /// an analysis thread never idles on the audit's disk sync while photos wait (measured: research/README.md).
    pub fn analyze_probe(&self, photo: &[u8], request: &SearchRequest, caller: &Principal) -> Result<Analysis, ServiceError> {
        self.authorize_search(request, caller)?;
        let options = AnalyzeOptions { min_face_px: request.min_face_px, max_faces: Some(self.config.max_faces_per_photo.max(1)) };
        Ok(self.pipeline().analyze_bytes(photo, options)?)
    }

    /// The light half of [`Self::search_photo`]: candidates for every face of an analysed probe, audited.
    pub fn search_analysis(&self, analysis: Analysis, request: &SearchRequest, caller: &Principal) -> Result<SearchResult, ServiceError> {
        let request = &self.authorize_search(request, caller)?;
        let started = Instant::now();
        let context = self.search_context(self.engine(), request)?;
        context.check_model(&analysis)?;
        let mut faces = Vec::with_capacity(analysis.faces.len());
        let mut probes = Vec::with_capacity(analysis.faces.len());
        for face in &analysis.faces {
            if let Some(min) = request.min_quality {
                if face.quality.detector_score < min {
                    faces.push(FaceSearch {
                        face: Some(face.into()),
                        searched: false,
                        skipped_reason: Some(format!("detector score {:.2} below min_quality {min:.2}", face.quality.detector_score)),
                        candidates: Vec::new(),
                    });
                    probes.push(None);
                    continue;
                }
            }
            let candidates = self.candidates(&face.embedding.values, request, &context)?;
            // Only a face that makes hits needs its crop kept.
            let makes_hits = request.mode == SearchMode::Identification && !candidates.is_empty();
            probes.push(if makes_hits { Some(super::enroll::face_jpeg(&face.aligned.image)?) } else { None });
            faces.push(FaceSearch { face: Some(face.into()), searched: true, skipped_reason: None, candidates });
        }
        let probe = Probe { sha256: Some(&analysis.photo_sha256), face_jpegs: probes };
        let mut result = self.finish_search(caller, request, &context, faces, analysis.timings, started, probe)?;
        result.faces_detected = analysis.faces_detected.max(result.faces.len());
        result.faces_truncated = result.faces_detected > result.faces.len();
        Ok(result)
    }

    /// Candidates for every face of an analysed photo, unaudited: a job photo's search, whose audit entry the job's
    /// store write carries with its result and hits. The caller's permission and scope were checked at submission.
    pub(super) fn face_candidates(
        &self,
        engine: Arc<Engine>,
        analysis: &Analysis,
        request: &SearchRequest,
    ) -> Result<Vec<FaceSearch>, ServiceError> {
        let context = self.search_context(engine, request)?;
        context.check_model(analysis)?;
        analysis
            .faces
            .iter()
            .map(|face| {
                let candidates = self.candidates(&face.embedding.values, request, &context)?;
                Ok(FaceSearch { face: Some(face.into()), searched: true, skipped_reason: None, candidates })
            })
            .collect()
    }

    /// Searches with an embedding the caller already has (it must come from the service's model).
    pub fn search_embedding(
        &self,
        embedding: &[f32],
        request: &SearchRequest,
        caller: &Principal,
    ) -> Result<SearchResult, ServiceError> {
        let request = &self.authorize_search(request, caller)?;
        let engine = self.engine();
        let query = checked_embedding(&engine, embedding)?;
        let started = Instant::now();
        let context = self.search_context(engine, request)?;
        let candidates = self.candidates(&query, request, &context)?;
        let faces = vec![FaceSearch { face: None, searched: true, skipped_reason: None, candidates }];
        let probe = Probe { sha256: None, face_jpegs: Vec::new() };
        self.finish_search(caller, request, &context, faces, StageTimings::default(), started, probe)
    }

    /// Audits the search, records its hits in the same transaction, and assembles its answer.
    #[allow(clippy::too_many_arguments)]
    fn finish_search(
        &self,
        caller: &Principal,
        request: &SearchRequest,
        context: &SearchContext,
        mut faces: Vec<FaceSearch>,
        timings_ms: StageTimings,
        started: Instant,
        probe: Probe<'_>,
    ) -> Result<SearchResult, ServiceError> {
        let search_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Identification mode answers only alerting candidates: each is a hit. Investigation mode makes none.
        let alerting: Vec<(usize, usize)> = match request.mode {
            SearchMode::Identification => faces
                .iter()
                .enumerate()
                .flat_map(|(f, search)| {
                    search.candidates.iter().enumerate().filter(|(_, c)| c.alert).map(move |(c, _)| (f, c))
                })
                .collect(),
            SearchMode::Investigation => Vec::new(),
        };
        let context_of_hits = HitContext { checkpoint: request.checkpoint.clone(), case: request.case.clone(), job: None };
        let new_hits: Vec<_> = alerting
            .iter()
            .map(|&(f, c)| {
                let jpeg = probe.face_jpegs.get(f).cloned().flatten();
                Self::new_hit(HitSource::Checkpoint, f, &faces[f].candidates[c], jpeg, &context_of_hits, caller)
            })
            .collect();
        // Who, why, what was asked and which subjects came back — never embeddings or photos.
        let mut details = super::audit_details::search_details(request, &faces, probe.sha256);
        if !new_hits.is_empty() {
            details["hits"] = serde_json::json!(new_hits.len());
        }
        let (search_id, hits) = self.record_hits(caller.entry(Action::Search, None, details), new_hits)?;
        for (&(f, c), hit) in alerting.iter().zip(&hits) {
            faces[f].candidates[c].hit_id = Some(hit.id);
        }
        Ok(SearchResult {
            search_id,
            hits: hits.iter().map(|hit| hit.id).collect(),
            mode: request.mode,
            model_id: context.engine.model_id().to_string(),
            gallery_templates: context.gallery_size,
            decision_statistic: statistic_of(&context.engine),
            faces_detected: faces.len(),
            faces_truncated: false,
            faces,
            timings_ms,
            search_ms,
        })
    }

    /// 1:1: the largest face of each photo.
    pub fn verify_photos(&self, a: &[u8], b: &[u8], caller: &Principal) -> Result<VerifyResult, ServiceError> {
        caller.require(Permission::Verify)?;
        let engine = self.engine();
        let ea = probe_embedding(&engine, a)?;
        let eb = probe_embedding(&engine, b)?;
        let similarity = ea.similarity(&eb).ok_or(ServiceError::InvalidEmbedding)?;
        let result = verdict(&engine, similarity, None, None);
        self.audit_use(caller.entry(
            Action::Verify,
            None,
            serde_json::json!({ "similarity": similarity, "decision": result.decision }),
        ))?;
        Ok(result)
    }

    /// 1:1: the largest face of the photo against a subject's best template.
    pub fn verify_subject(&self, photo: &[u8], subject_id: i64, caller: &Principal) -> Result<VerifyResult, ServiceError> {
        caller.require(Permission::Verify)?;
        self.subject_for(subject_id, caller)?;
        let engine = self.engine();
        let templates = self.store.subject_embeddings(subject_id, engine.model_id())?;
        let probe = probe_embedding(&engine, photo)?;
        let best = templates
            .iter()
            .map(|(id, e)| (*id, crate::embed::dot(&probe.values, e)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| ServiceError::InvalidRequest(format!("subject {subject_id} has no templates of this model")))?;
        let result = verdict(&engine, best.1, Some(subject_id), Some(best.0));
        self.audit_use(caller.entry(
            Action::Verify,
            Some(format!("subject/{subject_id}")),
            serde_json::json!({ "similarity": best.1, "decision": result.decision }),
        ))?;
        Ok(result)
    }

    fn search_context(&self, engine: Arc<Engine>, request: &SearchRequest) -> Result<SearchContext, ServiceError> {
        let k = request.k.unwrap_or(self.config.default_k);
        if k == 0 || k > self.config.max_k {
            return Err(ServiceError::InvalidRequest(format!("k must be between 1 and {}", self.config.max_k)));
        }
        let all = self.store.list_watchlists()?;
        let filter = match &request.watchlists {
            None => LabelFilter::All,
            Some(names) if names.is_empty() => LabelFilter::All,
            Some(names) => {
                let mut labels = Vec::with_capacity(names.len());
                for name in names {
                    let w = all.iter().find(|w| &w.name == name).ok_or_else(|| {
                        ServiceError::Gallery(crate::gallery::GalleryError::NotFound {
                            what: crate::gallery::Entity::Watchlist,
                            id: name.clone(),
                        })
                    })?;
                    labels.push(w.id);
                }
                LabelFilter::Only(labels)
            }
        };
        let gallery_size = engine.index.len();
        let alert_thresholds = all.iter().map(|w| (w.id, alert_threshold(&engine, w.alert_fpir, gallery_size))).collect();
        let default_threshold = alert_threshold(&engine, self.config.default_alert_fpir, gallery_size);
        let mut context = SearchContext {
            engine,
            k,
            filter,
            gallery_size,
            alert_thresholds,
            default_threshold,
            identification_floor: None,
        };
        context.identification_floor = identification_floor(request, &context);
        Ok(context)
    }

    /// Ranked candidates for one query vector.
    fn candidates(&self, query: &[f32], request: &SearchRequest, context: &SearchContext) -> Result<Vec<Candidate>, ServiceError> {
        let engine = &context.engine;
        let statistic = statistic_of(engine);
        let depth = context.k.max(statistic.candidates_needed());
        // Subjects may hold several templates; ask for more templates than subjects needed.
        let k_templates = depth * 3 + 8;
        let params = SearchParams {
            k: k_templates,
            ef: Some(self.config.hnsw_ef_search.max(k_templates)),
            filter: context.filter.clone(),
        };
        let neighbours = match context.identification_floor {
            Some(floor) => self.templates_above(engine, query, floor, params)?,
            None => engine.index.search(query, &params)?,
        };
        let keys: Vec<i64> = neighbours.iter().map(|n| n.key as i64).collect();
        let owners = self.store.template_owners(&keys)?;
        // Best template per subject; keys without an owner were deleted after the index answered.
        let mut best: Vec<(i64, i64, f32, u32)> = Vec::new();
        let mut seen: HashMap<i64, ()> = HashMap::new();
        for n in &neighbours {
            let Some(owner) = owners.get(&(n.key as i64)) else { continue };
            if seen.insert(owner.subject_id, ()).is_none() {
                best.push((owner.subject_id, n.key as i64, n.similarity, owner.label));
            }
        }
        best.truncate(depth);
        let ranked: Vec<f32> = best.iter().map(|b| b.2).collect();
        let decision = statistic.decide(&ranked);
        let ids: Vec<i64> = best.iter().map(|b| b.0).collect();
        let subjects = self.store.subjects_by_ids(&ids)?;
        let mut out = Vec::with_capacity(context.k);
        for (i, (subject_id, template_id, similarity, label)) in best.into_iter().enumerate() {
            let Some(subject) = subjects.get(&subject_id) else { continue };
            let decision_score = match statistic {
                super::DecisionStatistic::Top1 => Some(similarity),
                super::DecisionStatistic::Margin { .. } => (i == 0).then_some(decision).flatten(),
            };
            let threshold = context.alert_thresholds.get(&label).copied().unwrap_or(context.default_threshold);
            let fpir = match &engine.calibration {
                Some(c) => decision_score.map(|s| c.fpir(s, context.gallery_size)),
                None => None,
            };
            let fpir_extrapolated = match (&engine.calibration, decision_score) {
                (Some(c), Some(s)) => c.is_extrapolated(s),
                _ => false,
            };
            let alert = decision_score.is_some_and(|s| s >= threshold);
            if request.mode == SearchMode::Identification && !alert {
                continue;
            }
            out.push(Candidate {
                rank: i + 1,
                subject_id,
                display_name: subject.display_name.clone(),
                external_ref: subject.external_ref.clone(),
                watchlist: subject.watchlist.clone(),
                template_id,
                similarity,
                decision_score,
                fpir,
                fpir_extrapolated,
                alert,
                hit_id: None,
            });
            if out.len() == context.k {
                break;
            }
        }
        Ok(out)
    }

    /// Identification with the top-1 statistic: only templates at or above `floor` (the lowest threshold of the
    /// searched watchlists) can be returned, and they are dropped below it before the store is asked who owns them,
    /// so a checkpoint search of a traveller who is on no list costs the index walk only.
    ///
    /// With `hnsw_ef_identification` set, the walk is first a short one at that effort; whenever the best template
    /// it finds comes within `hnsw_identification_margin` of the floor, the search is repeated in full (`params`),
    /// so every search that can alert gets the full walk's answer — provided the short walk's best never falls
    /// further below the true nearest than the margin, which is what a site must measure before enabling it.
    fn templates_above(
        &self,
        engine: &Engine,
        query: &[f32],
        floor: f32,
        params: SearchParams,
    ) -> Result<Vec<Neighbour>, ServiceError> {
        let mut neighbours = match self.config.hnsw_ef_identification {
            Some(short_ef) => {
                let ef = short_ef.clamp(1, params.ef.unwrap_or(usize::MAX));
                let short = SearchParams { k: params.k.min(ef), ef: Some(ef), filter: params.filter.clone() };
                let found = engine.index.search(query, &short)?;
                let best = found.iter().map(|n| n.similarity).reduce(f32::max);
                if best.is_some_and(|b| b >= floor - self.config.hnsw_identification_margin) {
                    engine.index.search(query, &params)?
                } else {
                    found
                }
            }
            None => engine.index.search(query, &params)?,
        };
        neighbours.retain(|n| n.similarity >= floor);
        Ok(neighbours)
    }
}

/// What a search keeps of its probe photo: its sha256 for the audit trail, and the crop of each face that makes
/// hits (by face, in answer order; empty for an embedding search).
struct Probe<'a> {
    sha256: Option<&'a str>,
    face_jpegs: Vec<Option<Vec<u8>>>,
}

struct SearchContext {
    /// The engine the whole search uses, taken once.
    engine: Arc<Engine>,
    k: usize,
    filter: LabelFilter,
    gallery_size: usize,
    /// Alert threshold of every watchlist at this gallery size, and the default one for a label no longer listed:
    /// computed once per search rather than once per candidate.
    alert_thresholds: HashMap<u32, f32>,
    default_threshold: f32,
    /// Computed once per search, for every face of the photo: see `identification_floor`.
    identification_floor: Option<f32>,
}

impl SearchContext {
    /// Refuses an analysis made by another recognizer than this search's: a migration switched models between
    /// the probe's analysis and its search (`model_switched`; asking again uses the new model).
    fn check_model(&self, analysis: &Analysis) -> Result<(), ServiceError> {
        let serving = self.engine.model_id();
        match analysis.faces.iter().find(|f| &f.embedding.model_id != serving) {
            Some(face) => Err(ServiceError::ModelSwitched { analysed: face.embedding.model_id.to_string(), serving: serving.to_string() }),
            None => Ok(()),
        }
    }
}

/// The decision statistic of the engine's calibration (top-1 without one).
fn statistic_of(engine: &Engine) -> super::DecisionStatistic {
    engine.calibration.as_ref().map(|c| c.statistic).unwrap_or(super::DecisionStatistic::Top1)
}

/// The decision score a watchlist with alert target `fpir` needs at this gallery size: from the calibration, or the
/// model's 1:1 threshold when the manifest has none.
fn alert_threshold(engine: &Engine, fpir: f64, gallery_size: usize) -> f32 {
    match &engine.calibration {
        Some(c) => c.threshold(fpir, gallery_size),
        None => verify_threshold(engine),
    }
}

fn verify_threshold(engine: &Engine) -> f32 {
    engine.pipeline.recognizer().manifest().thresholds.as_ref().map(|t| t.verify).unwrap_or(1.0)
}

fn verdict(engine: &Engine, similarity: f32, subject_id: Option<i64>, template_id: Option<i64>) -> VerifyResult {
    let threshold = verify_threshold(engine);
    VerifyResult {
        model_id: engine.model_id().to_string(),
        similarity,
        threshold,
        decision: VerifyDecision::at(similarity, threshold),
        subject_id,
        template_id,
    }
}

fn probe_embedding(engine: &Engine, photo: &[u8]) -> Result<Embedding, ServiceError> {
    let analysis = engine.pipeline.analyze_bytes(photo, AnalyzeOptions::default())?;
    analysis.subject().map(|f| f.embedding.clone()).ok_or(ServiceError::NoFace)
}

fn checked_embedding(engine: &Engine, embedding: &[f32]) -> Result<Vec<f32>, ServiceError> {
    let expected = engine.pipeline.recognizer().dimension();
    if embedding.len() != expected {
        return Err(ServiceError::EmbeddingDimension {
            model: engine.model_id().to_string(),
            expected,
            actual: embedding.len(),
        });
    }
    let mut query = embedding.to_vec();
    if !normalise(&mut query) {
        return Err(ServiceError::InvalidEmbedding);
    }
    Ok(query)
}

/// The lowest alert threshold among the searched watchlists, when identification mode decides on the raw top-1
/// similarity (other statistics need the runner-ups, so nothing may be dropped early).
fn identification_floor(request: &SearchRequest, context: &SearchContext) -> Option<f32> {
    if request.mode != SearchMode::Identification || statistic_of(&context.engine) != super::DecisionStatistic::Top1 {
        return None;
    }
    let searched = context.alert_thresholds.iter().filter(|(label, _)| match &context.filter {
        LabelFilter::All => true,
        LabelFilter::Only(labels) => labels.contains(label),
    });
    searched.map(|(_, threshold)| *threshold).chain(std::iter::once(context.default_threshold)).reduce(f32::min)
}

