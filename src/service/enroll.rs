//! Enrollment: one photo → one face template of a subject, refused with a clear code when the photo has no face,
//! several faces and no choice, or a face below the quality policy. Acknowledged only after the store committed.

use std::io::Cursor;
use std::sync::Arc;

use serde::Serialize;

use crate::gallery::{NewTemplate, Template, TemplateFace};
use crate::pipeline::AnalyzeOptions;
use crate::quality::FaceQuality;

use super::{Action, Permission, Principal, ServiceError, WatchlistService};

/// One enrollment.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub subject_id: i64,
    pub photo: Vec<u8>,
    pub face: FaceChoice,
}

/// Which face of the photo to enroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceChoice {
    /// The photo must show exactly one face; several are refused (`several_faces`).
    Only,
    /// This face, by index in detector-score order.
    Index(usize),
    /// The photo's subject ([`crate::pipeline::Analysis::subject`]): for labelled folders of portraits.
    Subject,
}

/// What was enrolled.
#[derive(Debug, Clone, Serialize)]
pub struct EnrollOutcome {
    pub template: Template,
    pub quality: FaceQuality,
    pub faces_in_photo: usize,
}

impl WatchlistService {
    pub fn enroll(&self, request: &EnrollRequest, caller: &Principal) -> Result<EnrollOutcome, ServiceError> {
        match self.enroll_once(request, caller) {
            // A migration switched models while the photo was analysed: once more with the model that serves now.
            Err(ServiceError::ModelSwitched { .. }) => self.enroll_once(request, caller),
            other => other,
        }
    }

    fn enroll_once(&self, request: &EnrollRequest, caller: &Principal) -> Result<EnrollOutcome, ServiceError> {
        caller.require(Permission::EditSubjects)?;
        let subject = self.subject_for(request.subject_id, caller)?;
        let sha = crate::decode::sha256_hex(&request.photo);
        if self.store.has_photo(subject.id, &sha)? {
            return Err(ServiceError::DuplicatePhoto { subject_id: subject.id });
        }
        let engine = self.engine();
        let photo = engine.pipeline.decode(&request.photo).map_err(crate::pipeline::PipelineError::from)?;
        let analysis = engine.pipeline.analyze(&photo, AnalyzeOptions::default())?;
        let count = analysis.faces.len();
        let face = match (count, request.face) {
            (0, _) => return Err(ServiceError::NoFace),
            (_, FaceChoice::Index(i)) if i >= count => return Err(ServiceError::NoSuchFace { index: i, count }),
            (_, FaceChoice::Index(i)) => &analysis.faces[i],
            (1, FaceChoice::Only) => &analysis.faces[0],
            (_, FaceChoice::Only) => return Err(ServiceError::SeveralFaces { count }),
            (_, FaceChoice::Subject) => analysis.subject().ok_or(ServiceError::NoFace)?,
        };
        let reasons = self.quality.shortfalls(&face.quality);
        if !reasons.is_empty() {
            return Err(ServiceError::PoorQuality { reasons });
        }
        let thumbnail = if self.config.store_thumbnails {
            Some(face_jpeg(&face.aligned.image)?)
        } else {
            None
        };
        let face_kept = if self.config.keep_enrolment_faces {
            let region = engine.pipeline.face_region(&photo, face).map_err(ServiceError::FaceRegion)?;
            let geometry = serde_json::to_value(region.geometry).unwrap_or(serde_json::Value::Null);
            TemplateFace::Keep { jpeg: region.jpeg, geometry }
        } else {
            TemplateFace::NotKept
        };
        drop(photo);
        let new = NewTemplate {
            subject_id: subject.id,
            model_id: engine.model_id().to_string(),
            embedding: face.embedding.values.clone(),
            quality: serde_json::to_value(face.quality).unwrap_or(serde_json::Value::Null),
            photo_sha256: analysis.photo_sha256.clone(),
            thumbnail_jpeg: thumbnail,
            face: face_kept,
            enrolled_by: caller.actor(),
        };
        let template = {
            let _guard = self.write_lock.lock();
            // A switch to another model holds the write lock: once it is held, the engine this face was embedded
            // with must still be the serving one, or the template would miss the new model's index.
            if !Arc::ptr_eq(&engine, &self.engine()) {
                return Err(ServiceError::ModelSwitched {
                    analysed: engine.model_id().to_string(),
                    serving: self.model_id().to_string(),
                });
            }
            // The label is read under the lock: a concurrent move to another watchlist cannot slip in between.
            let label = self.store.get_watchlist(&self.store.get_subject(subject.id)?.watchlist)?.id;
            let template = self.store.add_template(new, &|t: &crate::gallery::Template| {
                caller.entry(
                    Action::Enroll,
                    Some(format!("subject/{}/faces/{}", t.subject_id, t.id)),
                    serde_json::json!({ "photo_sha256": analysis.photo_sha256, "faces_in_photo": count }),
                )
            })?;
            engine.index.insert(template.id as u64, label, &face.embedding.values)?;
            template
        };
        Ok(EnrollOutcome { template, quality: face.quality, faces_in_photo: count })
    }
}

/// The small JPEG of an aligned face: an enrolled template's thumbnail, and a hit's probe crop, so that a reviewer
/// compares the two side by side at the same size and geometry (the recognizer's alignment).
pub(super) fn face_jpeg(image: &image::RgbImage) -> Result<Vec<u8>, ServiceError> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image.clone())
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(ServiceError::Thumbnail)?;
    Ok(out.into_inner())
}
