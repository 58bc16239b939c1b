//! Face embeddings: a recognizer loaded from its manifest turns aligned crops into L2-normalised embeddings, in
//! batches, with optional mirror-image test-time augmentation.

use std::sync::Arc;

use ndarray::Array4;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use crate::align::AlignedFace;
use crate::detect::DetectorLoadError;
use crate::manifest::{ColourOrder, InputSpec, ManifestError, ModelManifest, ModelTask, RecognizerSpec};
use crate::runtime::{Runtime, SessionPool};

/// A face template's vector: unit length, made by one model. Vectors of different models never compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub model_id: Arc<str>,
    pub values: Vec<f32>,
}

impl Embedding {
    /// Cosine similarity (dot product of unit vectors); `None` when the models differ.
    pub fn similarity(&self, other: &Embedding) -> Option<f32> {
        (self.model_id == other.model_id && self.values.len() == other.values.len())
            .then(|| dot(&self.values, &other.values))
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales a vector to unit length; `false` when it has no direction (all zeros or not finite).
pub fn normalise(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("recognizer {id}: inference failed")]
    Inference {
        id: String,
        #[source]
        source: ort::Error,
    },
    #[error("recognizer {id}: crop is {width}x{height}, the model takes {expected_width}x{expected_height}")]
    WrongCropSize { id: String, width: u32, height: u32, expected_width: u32, expected_height: u32 },
    #[error("recognizer {id}: output has {len} values, expected {expected}")]
    BadOutput { id: String, len: usize, expected: usize },
    #[error("recognizer {id}: produced an embedding that is zero or not finite")]
    Degenerate { id: String },
}

/// A face recognizer: crops in, embeddings out.
pub struct Recognizer {
    manifest: ModelManifest,
    spec: RecognizerSpec,
    model_id: Arc<str>,
    pool: SessionPool,
    max_batch: usize,
}

impl Recognizer {
    pub fn new(runtime: &Runtime, manifest: ModelManifest) -> Result<Recognizer, DetectorLoadError> {
        manifest.expect_task(ModelTask::Recognizer)?;
        let spec = manifest.recognizer.clone().ok_or_else(|| ManifestError::WrongTask {
            id: manifest.id.clone(),
            expected: "recognizer",
            actual: "detector",
        })?;
        let path = manifest.verify_file()?;
        let pool = runtime.session_pool(&path)?;
        manifest.check_signature(&pool.signature())?;
        Ok(Recognizer { model_id: Arc::from(manifest.id.as_str()), spec, manifest, pool, max_batch: 32 })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn model_id(&self) -> &Arc<str> {
        &self.model_id
    }

    pub fn dimension(&self) -> usize {
        self.spec.dimension
    }

    /// Embeddings of aligned crops, in order. Crops go through the model in batches of up to 32 (with their mirror
    /// images in the same batch when the manifest asks for flip augmentation).
    pub fn embed(&self, faces: &[&AlignedFace]) -> Result<Vec<Embedding>, EmbedError> {
        let mut out = Vec::with_capacity(faces.len());
        let per_face = if self.spec.flip_augmentation { 2 } else { 1 };
        for chunk in faces.chunks((self.max_batch / per_face).max(1)) {
            let input = self.input_tensor(chunk)?;
            let raw = self.run(&input)?;
            let dim = self.spec.dimension;
            for i in 0..chunk.len() {
                let mut values = raw[i * per_face * dim..(i * per_face + 1) * dim].to_vec();
                if per_face == 2 {
                    // Normalise each view first so both count equally, then the sum.
                    let mut mirror = raw[(i * 2 + 1) * dim..(i * 2 + 2) * dim].to_vec();
                    normalise(&mut values);
                    normalise(&mut mirror);
                    values.iter_mut().zip(mirror.iter()).for_each(|(a, b)| *a += b);
                }
                if !normalise(&mut values) {
                    return Err(EmbedError::Degenerate { id: self.manifest.id.clone() });
                }
                out.push(Embedding { model_id: self.model_id.clone(), values });
            }
        }
        Ok(out)
    }

    fn run(&self, input: &Array4<f32>) -> Result<Vec<f32>, EmbedError> {
        let id = &self.manifest.id;
        let inference = |source| EmbedError::Inference { id: id.clone(), source };
        let expected = input.shape()[0] * self.spec.dimension;
        self.pool.with_session(|session| {
            let tensor = TensorRef::from_array_view(input.view()).map_err(inference)?;
            let outputs = session.run(ort::inputs![self.manifest.input.name.as_str() => tensor]).map_err(inference)?;
            let value = outputs
                .get(&self.spec.output)
                .ok_or(EmbedError::BadOutput { id: id.clone(), len: 0, expected })?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(inference)?;
            if data.len() != expected {
                return Err(EmbedError::BadOutput { id: id.clone(), len: data.len(), expected });
            }
            Ok(data.to_vec())
        })
    }

    /// NCHW batch in the model's colour order and normalisation; mirror images follow their crop when flipping.
    fn input_tensor(&self, faces: &[&AlignedFace]) -> Result<Array4<f32>, EmbedError> {
        let size = self.manifest.alignment.as_ref().map(|a| a.size).unwrap_or([0, 0]);
        let wrong_size = |CropOfAnotherSize { width, height }| EmbedError::WrongCropSize {
            id: self.manifest.id.clone(),
            width,
            height,
            expected_width: size[0],
            expected_height: size[1],
        };
        crop_tensor(faces, size, &self.manifest.input, self.spec.flip_augmentation).map_err(wrong_size)
    }
}

/// The size of the first crop that does not have the model's input size.
struct CropOfAnotherSize {
    width: u32,
    height: u32,
}

/// NCHW batch of `size` crops in `input`'s colour order and normalisation, each followed by its mirror image when
/// `flip`.
fn crop_tensor(
    faces: &[&AlignedFace],
    size: [u32; 2],
    input: &InputSpec,
    flip: bool,
) -> Result<Array4<f32>, CropOfAnotherSize> {
    let [w, h] = size;
    let per_face = if flip { 2 } else { 1 };
    let (wu, hu) = (w as usize, h as usize);
    let mut tensor = Array4::<f32>::zeros((faces.len() * per_face, 3, hu, wu));
    let plane = wu * hu;
    let buf = tensor.as_slice_mut().expect("fresh array is contiguous");
    let scale = input.std.map(|s| 1.0 / s);
    for (i, face) in faces.iter().enumerate() {
        if face.image.dimensions() != (w, h) {
            return Err(CropOfAnotherSize { width: face.image.width(), height: face.image.height() });
        }
        if plane == 0 {
            continue;
        }
        let raw = face.image.as_raw();
        for view in 0..per_face {
            let base = (i * per_face + view) * 3 * plane;
            for c in 0..3 {
                // Tensor channel k holds RGB channel c per the manifest's colour order; one plane at a time,
                // so the inner loop is a plain strided read and a contiguous write.
                let k = match input.colour {
                    ColourOrder::Rgb => c,
                    ColourOrder::Bgr => 2 - c,
                };
                let (mean, gain) = (input.mean[k], scale[k]);
                let out = &mut buf[base + k * plane..base + (k + 1) * plane];
                for (row_out, row_in) in out.chunks_exact_mut(wu).zip(raw.chunks_exact(wu * 3)) {
                    if view == 1 {
                        for (o, px) in row_out.iter_mut().zip(row_in.chunks_exact(3).rev()) {
                            *o = (px[c] as f32 - mean) * gain;
                        }
                    } else {
                        for (o, px) in row_out.iter_mut().zip(row_in.chunks_exact(3)) {
                            *o = (px[c] as f32 - mean) * gain;
                        }
                    }
                }
            }
        }
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(width: u32, height: u32) -> AlignedFace {
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 200]));
        AlignedFace { image, transform: crate::align::Similarity { a: 1.0, b: 0.0, tx: 0.0, ty: 0.0 } }
    }

    #[test]
    fn crop_tensor_is_nchw_in_the_models_colour_order_with_mirrors_after_their_crop() {
        let spec = InputSpec {
            name: "input".into(),
            shape: [-1, 3, 3, 4],
            colour: ColourOrder::Bgr,
            mean: [10.0, 20.0, 30.0],
            std: [2.0, 4.0, 8.0],
        };
        let (a, b) = (face(4, 3), face(4, 3));
        let t = crop_tensor(&[&a, &b], [4, 3], &spec, true).ok().unwrap();
        assert_eq!(t.shape(), &[4, 3, 3, 4]);
        for (x, y, px) in a.image.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for c in 0..3 {
                // BGR: RGB channel c sits in plane 2 - c, normalised with that plane's mean and std.
                let k = 2 - c;
                let expected = (px.0[c] as f32 - spec.mean[k]) / spec.std[k];
                assert_eq!(t[[0, k, y, x]], expected, "crop ({x}, {y}) channel {c}");
                assert_eq!(t[[1, k, y, 3 - x]], expected, "mirror of ({x}, {y}) channel {c}");
                assert_eq!(t[[2, k, y, x]], expected, "second crop ({x}, {y}) channel {c}");
            }
        }
        let plain = crop_tensor(&[&a], [4, 3], &spec, false).ok().unwrap();
        assert_eq!(plain.shape(), &[1, 3, 3, 4]);
        let wrong = face(5, 3);
        let refused = crop_tensor(&[&a, &wrong], [4, 3], &spec, false);
        assert!(matches!(refused, Err(CropOfAnotherSize { width: 5, height: 3 })));
    }

    #[test]
    fn normalise_makes_unit_vectors_and_refuses_zero() {
        let mut v = vec![3.0, 4.0];
        assert!(normalise(&mut v));
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        assert!(!normalise(&mut z));
        let mut n = vec![f32::NAN, 1.0];
        assert!(!normalise(&mut n));
    }

    #[test]
    fn embeddings_of_different_models_do_not_compare() {
        let a = Embedding { model_id: Arc::from("a"), values: vec![1.0, 0.0] };
        let b = Embedding { model_id: Arc::from("b"), values: vec![1.0, 0.0] };
        let a2 = Embedding { model_id: Arc::from("a"), values: vec![0.6, 0.8] };
        assert_eq!(a.similarity(&b), None);
        assert_eq!(a.similarity(&a2), Some(0.6));
    }
}
