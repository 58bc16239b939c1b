//! Evaluation protocols on a labelled photo folder (`<identity>/<photo>`): which photos are compared or searched
//! against which, fixed here so that figures are comparable between runs, models and implementations.
//!
//! - 1:1 verification pairs: read from an LFW `pairs.txt` or a deepface-style `pairs.csv`, or generated (every
//!   mated pair plus a seeded sample of non-mated pairs).
//! - Open-set 1:N identification ([`open_set_protocol`]): the first photo (sorted file names) of every identity
//!   with at least two photos is enrolled, that identity's other photos are mated probes; identities with a single
//!   photo alternate, in sorted order, between gallery distractors (the first, third, …) and non-mated probes.
//! - A seeded, stratified split of identities into tuning and test halves ([`split_identities`]), so that choices
//!   tuned on one half are reported on identities they never saw.
//! - Exact (brute-force cosine) search over an in-memory gallery ([`search_exact`]) and synthetic distractor
//!   templates drawn from a Gaussian fitted to real ones ([`GaussianFaceModel`]) for gallery-size studies.
//!
//! Everything is a pure function of the folder listing, embeddings and seeds; the face pipeline lives elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::score::decision::{centre, CohortStats};

/// File extensions read as photos (case-insensitive).
const PHOTO_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"];

/// Why a protocol could not be set up.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("photo folder {}: cannot be read", .path.display())]
    ReadFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("photo folder {}: no identity folder holds a photo", .path.display())]
    NoPhotos { path: PathBuf },
    #[error("pairs file {}: cannot be read", .path.display())]
    ReadPairs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pairs file {} line {line}: {problem}", .path.display())]
    BadPairLine { path: PathBuf, line: usize, problem: String },
    #[error("pairs file {} line {line}: photo {photo} is not in the photo folder", .path.display())]
    UnknownPhoto { path: PathBuf, line: usize, photo: String },
    #[error("pairs file {}: holds no pairs", .path.display())]
    NoPairs { path: PathBuf },
    #[error("embeddings: vector {index} has {found} values, expected {expected}")]
    DimensionMismatch { index: usize, found: usize, expected: usize },
    #[error("synthetic distractors: need at least 2 templates to fit a model, got {found}")]
    TooFewTemplates { found: usize },
    #[error("synthetic distractors: covariance of the templates is not positive definite")]
    DegenerateCovariance,
}

// ---------------------------------------------------------------------------------------------
// Photo folders
// ---------------------------------------------------------------------------------------------

/// One photo of a labelled folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelledPhoto {
    /// The identity folder's name.
    pub identity: String,
    /// The photo's file name inside its identity folder.
    pub file: String,
}

impl LabelledPhoto {
    /// `<identity>/<file>`, the form pair lists use.
    pub fn relative_path(&self) -> String {
        format!("{}/{}", self.identity, self.file)
    }
}

/// The photos of a labelled folder, sorted by identity and then file name (byte order), so that "the first photo
/// of an identity" and every index derived from the listing are the same on every machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoSet {
    pub root: PathBuf,
    pub photos: Vec<LabelledPhoto>,
}

impl PhotoSet {
    /// Lists `dir/<identity>/<photo>`; files directly under `dir` (e.g. a pairs list) and non-photo files are
    /// ignored, as are hidden entries.
    pub fn load(dir: &Path) -> Result<PhotoSet, ProtocolError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProtocolError::ReadFolder { path, source }
        };
        let mut photos = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let entry = entry.map_err(read_err(dir))?;
            let folder = entry.path();
            let Some(identity) = visible_name(&folder) else { continue };
            if !folder.is_dir() {
                continue;
            }
            for photo in std::fs::read_dir(&folder).map_err(read_err(&folder))? {
                let path = photo.map_err(read_err(&folder))?.path();
                let Some(file) = visible_name(&path) else { continue };
                if path.is_file() && is_photo(&file) {
                    photos.push(LabelledPhoto { identity: identity.clone(), file });
                }
            }
        }
        if photos.is_empty() {
            return Err(ProtocolError::NoPhotos { path: dir.to_path_buf() });
        }
        photos.sort();
        Ok(PhotoSet { root: dir.to_path_buf(), photos })
    }

    /// The folder's own name, used to label reports (`lfw-dev`).
    pub fn name(&self) -> String {
        self.root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone())
            .file_name()
            .map_or_else(|| "photos".to_owned(), |n| n.to_string_lossy().into_owned())
    }

    /// Full path of photo `index`.
    pub fn path(&self, index: usize) -> PathBuf {
        let photo = &self.photos[index];
        self.root.join(&photo.identity).join(&photo.file)
    }

    /// Photo indices grouped by identity, identities in sorted order, photos in listing order.
    pub fn by_identity(&self) -> BTreeMap<&str, Vec<usize>> {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, photo) in self.photos.iter().enumerate() {
            groups.entry(photo.identity.as_str()).or_default().push(index);
        }
        groups
    }

    /// Index of the photo at `<identity>/<file>`.
    pub fn find(&self, relative_path: &str) -> Option<usize> {
        let (identity, file) = relative_path.split_once('/')?;
        self.photos.binary_search_by(|p| (p.identity.as_str(), p.file.as_str()).cmp(&(identity, file))).ok()
    }
}

fn visible_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    (!name.starts_with('.')).then_some(name)
}

fn is_photo(file: &str) -> bool {
    file.rsplit_once('.').is_some_and(|(_, ext)| PHOTO_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

// ---------------------------------------------------------------------------------------------
// Verification pairs
// ---------------------------------------------------------------------------------------------

/// Two photos to compare and whether they show the same person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoPair {
    pub a: usize,
    pub b: usize,
    pub mated: bool,
}

/// Where a pair list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairSource {
    /// LFW `pairs.txt`: `name n1 n2` (mated) and `name1 n1 name2 n2` (non-mated) lines.
    LfwPairsTxt,
    /// `file_x,file_y,same` with paths relative to the photo folder.
    Csv,
    /// Every mated pair plus a seeded sample of non-mated pairs ([`generate_pairs`]).
    Generated,
}

/// A list of pairs, with the file's own cross-validation folds when it defines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairList {
    pub pairs: Vec<PhotoPair>,
    /// LFW's `pairs.txt` header `folds n` defines `folds` consecutive blocks of `2n` pairs; `None` when the list
    /// has no folds of its own.
    pub folds: Option<Vec<usize>>,
    pub source: PairSource,
}

/// Reads a pair list, detecting its format: a first line with commas is CSV, anything else LFW `pairs.txt`.
pub fn read_pairs(path: &Path, set: &PhotoSet) -> Result<PairList, ProtocolError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ProtocolError::ReadPairs { path: path.to_path_buf(), source })?;
    parse_pairs(&text, path, set)
}

/// Parses a pair list (see [`read_pairs`]); `path` only labels errors.
pub fn parse_pairs(text: &str, path: &Path, set: &PhotoSet) -> Result<PairList, ProtocolError> {
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let list = match lines.first() {
        Some((_, first)) if first.contains(',') => parse_csv_pairs(&lines, path, set)?,
        _ => parse_lfw_pairs(&lines, path, set)?,
    };
    if list.pairs.is_empty() {
        return Err(ProtocolError::NoPairs { path: path.to_path_buf() });
    }
    Ok(list)
}

fn parse_csv_pairs(lines: &[(usize, &str)], path: &Path, set: &PhotoSet) -> Result<PairList, ProtocolError> {
    let bad = |line: usize, problem: String| ProtocolError::BadPairLine { path: path.to_path_buf(), line, problem };
    let mut pairs = Vec::new();
    for (position, &(line, text)) in lines.iter().enumerate() {
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            return Err(bad(line, format!("expected 3 comma-separated fields, found {}", fields.len())));
        }
        let mated = match fields[2] {
            "1" | "true" | "True" => true,
            "0" | "false" | "False" => false,
            // A header line names its columns instead.
            _ if position == 0 => continue,
            other => return Err(bad(line, format!("same-person flag `{other}` is not 0 or 1"))),
        };
        let a = lookup(set, fields[0], path, line)?;
        let b = lookup(set, fields[1], path, line)?;
        pairs.push(PhotoPair { a, b, mated });
    }
    Ok(PairList { pairs, folds: None, source: PairSource::Csv })
}

fn parse_lfw_pairs(lines: &[(usize, &str)], path: &Path, set: &PhotoSet) -> Result<PairList, ProtocolError> {
    let bad = |line: usize, problem: String| ProtocolError::BadPairLine { path: path.to_path_buf(), line, problem };
    let number = |line: usize, field: &str| {
        field.parse::<usize>().map_err(|_| bad(line, format!("`{field}` is not a photo number")))
    };
    let mut header = None;
    let mut pairs = Vec::new();
    for (position, &(line, text)) in lines.iter().enumerate() {
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.as_slice() {
            [folds, per_fold] if position == 0 => {
                header = Some((number(line, folds)?, number(line, per_fold)?));
            }
            [name, n1, n2] => {
                let a = lookup(set, &lfw_photo(name, number(line, n1)?), path, line)?;
                let b = lookup(set, &lfw_photo(name, number(line, n2)?), path, line)?;
                pairs.push(PhotoPair { a, b, mated: true });
            }
            [name1, n1, name2, n2] => {
                let a = lookup(set, &lfw_photo(name1, number(line, n1)?), path, line)?;
                let b = lookup(set, &lfw_photo(name2, number(line, n2)?), path, line)?;
                pairs.push(PhotoPair { a, b, mated: false });
            }
            _ => return Err(bad(line, format!("expected 3 or 4 whitespace-separated fields, found {}", fields.len()))),
        }
    }
    // The header's folds are only used when they describe the file exactly.
    let folds = header
        .filter(|&(folds, per_fold)| folds >= 2 && per_fold > 0 && folds * 2 * per_fold == pairs.len())
        .map(|(_, per_fold)| (0..pairs.len()).map(|i| i / (2 * per_fold)).collect());
    Ok(PairList { pairs, folds, source: PairSource::LfwPairsTxt })
}

/// LFW's file naming: `Name/Name_0003.jpg`.
fn lfw_photo(name: &str, number: usize) -> String {
    format!("{name}/{name}_{number:04}.jpg")
}

fn lookup(set: &PhotoSet, relative: &str, path: &Path, line: usize) -> Result<usize, ProtocolError> {
    set.find(relative).ok_or_else(|| ProtocolError::UnknownPhoto {
        path: path.to_path_buf(),
        line,
        photo: relative.to_owned(),
    })
}

/// Every mated pair of the set (each unordered pair of photos of one identity once) followed by `nonmated` pairs of
/// photos of different identities drawn uniformly without replacement with `seed` (all of them when fewer exist).
pub fn generate_pairs(set: &PhotoSet, nonmated: usize, seed: u64) -> PairList {
    let groups = set.by_identity();
    let mut pairs = Vec::new();
    for photos in groups.values() {
        for (i, &a) in photos.iter().enumerate() {
            for &b in &photos[i + 1..] {
                pairs.push(PhotoPair { a, b, mated: true });
            }
        }
    }
    let n = set.photos.len();
    let all_unordered = n * n.saturating_sub(1) / 2;
    let available = all_unordered - pairs.len();
    let wanted = nonmated.min(available);
    let identity_of: Vec<&str> = set.photos.iter().map(|p| p.identity.as_str()).collect();
    if wanted * 2 > available {
        // Dense request: enumerate and shuffle rather than rejection-sample a nearly exhausted space.
        let mut all: Vec<PhotoPair> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .filter(|&(a, b)| identity_of[a] != identity_of[b])
            .map(|(a, b)| PhotoPair { a, b, mated: false })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        all.shuffle(&mut rng);
        all.truncate(wanted);
        all.sort_by_key(|p| (p.a, p.b));
        pairs.extend(all);
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen = HashSet::with_capacity(wanted);
        let mut drawn = Vec::with_capacity(wanted);
        while drawn.len() < wanted {
            let (x, y) = (rng.random_range(0..n), rng.random_range(0..n));
            let (a, b) = (x.min(y), x.max(y));
            if identity_of[a] != identity_of[b] && seen.insert((a, b)) {
                drawn.push(PhotoPair { a, b, mated: false });
            }
        }
        pairs.extend(drawn);
    }
    PairList { pairs, folds: None, source: PairSource::Generated }
}

// ---------------------------------------------------------------------------------------------
// Open-set identification
// ---------------------------------------------------------------------------------------------

/// Which photo plays which role in an open-set identification run (photo indices into the [`PhotoSet`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpenSetProtocol {
    /// One enrolment per identity with at least two photos: its first photo.
    pub enrolments: Vec<usize>,
    /// Single-photo identities enrolled as distractors (nobody searches for them).
    pub distractors: Vec<usize>,
    /// The other photos of enrolled identities.
    pub mated_probes: Vec<usize>,
    /// Single-photo identities that are searched but not enrolled.
    pub nonmated_probes: Vec<usize>,
}

impl OpenSetProtocol {
    /// Enrolled identities: enrolments plus distractors.
    pub fn gallery_size(&self) -> usize {
        self.enrolments.len() + self.distractors.len()
    }
}

/// The open-set protocol over the identities `include` accepts (see the module documentation): enrol the first
/// photo of every identity with ≥ 2 photos, search with its other photos; single-photo identities alternate in
/// sorted order between gallery distractors (first, third, …) and non-mated probes (second, fourth, …).
pub fn open_set_protocol(set: &PhotoSet, include: impl Fn(&str) -> bool) -> OpenSetProtocol {
    let mut protocol = OpenSetProtocol::default();
    let mut singles = 0usize;
    for (identity, photos) in set.by_identity() {
        if !include(identity) {
            continue;
        }
        match photos.as_slice() {
            [only] => {
                if singles.is_multiple_of(2) {
                    protocol.distractors.push(*only);
                } else {
                    protocol.nonmated_probes.push(*only);
                }
                singles += 1;
            }
            [first, rest @ ..] => {
                protocol.enrolments.push(*first);
                protocol.mated_probes.extend_from_slice(rest);
            }
            [] => {}
        }
    }
    protocol
}

/// Identities divided into a tuning half and a test half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySplit {
    pub tuning: BTreeSet<String>,
    pub test: BTreeSet<String>,
}

/// Splits the set's identities in half with `seed`, stratified so that both halves get half of the identities with
/// several photos (which make mated searches) and half of the single-photo ones (distractors and non-mated
/// probes); an odd group gives its extra identity to the tuning half.
pub fn split_identities(set: &PhotoSet, seed: u64) -> IdentitySplit {
    let groups = set.by_identity();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = IdentitySplit { tuning: BTreeSet::new(), test: BTreeSet::new() };
    for want_single in [false, true] {
        let mut stratum: Vec<&str> = groups
            .iter()
            .filter(|(_, photos)| (photos.len() == 1) == want_single)
            .map(|(identity, _)| *identity)
            .collect();
        stratum.shuffle(&mut rng);
        let tuning = stratum.len().div_ceil(2);
        for (i, identity) in stratum.into_iter().enumerate() {
            let half = if i < tuning { &mut split.tuning } else { &mut split.test };
            half.insert(identity.to_owned());
        }
    }
    split
}

// ---------------------------------------------------------------------------------------------
// Exact search
// ---------------------------------------------------------------------------------------------

/// Row-major matrix of unit-length templates of one model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateMatrix {
    dimension: usize,
    values: Vec<f32>,
}

impl TemplateMatrix {
    pub fn new(dimension: usize) -> Self {
        TemplateMatrix { dimension, values: Vec::new() }
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dimension).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Appends a template; it must have the matrix's dimension.
    pub fn push(&mut self, template: &[f32]) -> Result<(), ProtocolError> {
        if template.len() != self.dimension {
            return Err(ProtocolError::DimensionMismatch {
                index: self.len(),
                found: template.len(),
                expected: self.dimension,
            });
        }
        self.values.extend_from_slice(template);
        Ok(())
    }

    /// Appends every row of `other` (same dimension).
    pub fn extend(&mut self, other: &TemplateMatrix) -> Result<(), ProtocolError> {
        if other.dimension != self.dimension && !other.is_empty() {
            return Err(ProtocolError::DimensionMismatch {
                index: self.len(),
                found: other.dimension,
                expected: self.dimension,
            });
        }
        self.values.extend_from_slice(&other.values);
        Ok(())
    }

    /// Mean of the rows (not normalised); `None` for an empty matrix.
    pub fn mean(&self) -> Option<Vec<f32>> {
        if self.is_empty() {
            return None;
        }
        let mut sum = vec![0f64; self.dimension];
        for row in self.rows() {
            sum.iter_mut().zip(row).for_each(|(s, &x)| *s += f64::from(x));
        }
        Some(sum.iter().map(|s| (s / self.len() as f64) as f32).collect())
    }

    /// Every row with `mean` subtracted and scaled back to unit length (see [`centre`]).
    pub fn centred(&self, mean: &[f32]) -> TemplateMatrix {
        let mut out = TemplateMatrix { dimension: self.dimension, values: Vec::with_capacity(self.values.len()) };
        for row in self.rows() {
            out.values.extend(centre(row, mean));
        }
        out
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.dimension..(index + 1) * self.dimension]
    }

    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks_exact(self.dimension.max(1))
    }
}

/// Cosine similarity of unit vectors, summed in eight lanes so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A gallery row and its similarity to the probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub row: usize,
    pub score: f32,
}

/// The result of one exact search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The `keep` highest-scoring rows, best first.
    pub candidates: Vec<Candidate>,
    /// 1-based rank of the mate row; rows scoring equal to the mate count ahead of it, so ties never flatter.
    pub mate_rank: Option<usize>,
    /// Similarity of the mate row.
    pub mate_score: Option<f32>,
    /// Statistics of every score except the top candidate's: the probe's full impostor cohort (for T-norm).
    pub others: Option<CohortStats>,
}

impl SearchResult {
    /// Candidate scores, best first.
    pub fn scores(&self) -> Vec<f32> {
        self.candidates.iter().map(|c| c.score).collect()
    }
}

/// Scores `probe` against every gallery row and keeps the best `keep`; `mate` is the row of the probe's own
/// identity, if enrolled. Non-finite scores sort last.
pub fn search_exact(gallery: &TemplateMatrix, probe: &[f32], keep: usize, mate: Option<usize>) -> SearchResult {
    let scores: Vec<f32> = gallery.rows().map(|row| dot(row, probe)).collect();
    let by_score_desc = |a: &Candidate, b: &Candidate| {
        let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        key(b.score).total_cmp(&key(a.score)).then(a.row.cmp(&b.row))
    };
    let mut candidates: Vec<Candidate> =
        scores.iter().enumerate().map(|(row, &score)| Candidate { row, score }).collect();
    let keep = keep.min(candidates.len());
    if keep > 0 && keep < candidates.len() {
        candidates.select_nth_unstable_by(keep - 1, by_score_desc);
        candidates.truncate(keep);
    }
    candidates.sort_by(by_score_desc);
    candidates.truncate(keep);
    let mate_score = mate.and_then(|m| scores.get(m).copied());
    let mate_rank =
        mate_score.map(|ms| 1 + scores.iter().enumerate().filter(|&(row, &s)| Some(row) != mate && s >= ms).count());
    let others = candidates.first().and_then(|top| {
        // Streamed moments: a copy of every score per probe would dominate large-gallery runs.
        let (mut n, mut sum, mut sum_sq) = (0usize, 0f64, 0f64);
        for (row, &s) in scores.iter().enumerate() {
            if row != top.row {
                let s = f64::from(s);
                n += 1;
                sum += s;
                sum_sq += s * s;
            }
        }
        stats_from_moments(n, sum, sum_sq)
    });
    SearchResult { candidates, mate_rank, mate_score, others }
}

/// Mean and population standard deviation from streamed moments; `None` for fewer than two values or no spread,
/// as [`crate::score::decision::cohort_stats`].
fn stats_from_moments(n: usize, sum: f64, sum_sq: f64) -> Option<CohortStats> {
    if n < 2 {
        return None;
    }
    let mean = sum / n as f64;
    let std = (sum_sq / n as f64 - mean * mean).max(0.0).sqrt();
    (std > 0.0 && std.is_finite()).then_some(CohortStats { mean: mean as f32, std: std as f32 })
}

/// For every gallery row, its similarities to the *other* rows, highest first, at most `keep` of them: the
/// template's own impostor cohort (the gallery doubles as the cohort set) for Z-norm, S-norm and the symmetric
/// margin. Quadratic in the gallery size.
pub fn template_neighbour_scores(gallery: &TemplateMatrix, keep: usize) -> Vec<Vec<f32>> {
    (0..gallery.len())
        .map(|row| {
            let mut scores: Vec<f32> = gallery
                .rows()
                .enumerate()
                .filter(|&(other, _)| other != row)
                .map(|(_, t)| dot(t, gallery.row(row)))
                .collect();
            scores.sort_by(|a, b| b.total_cmp(a));
            scores.truncate(keep);
            scores
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Synthetic distractors
// ---------------------------------------------------------------------------------------------

/// A multivariate normal fitted to real templates (mean and full covariance), whose samples, scaled to unit
/// length, stand in for templates of people nobody searches for.
///
/// Random unit vectors would be nearly orthogonal to every face and never compete; samples of this model share
/// the templates' common direction and their spread, so their similarity to a probe has about the mean and
/// variance that real impostors have. Real faces have heavier tails (look-alikes, shared pose or lighting), so
/// figures with synthetic distractors are an optimistic bound; evaluations compare them with real held-out
/// templates where they can.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianFaceModel {
    dimension: usize,
    mean: Vec<f64>,
    /// Lower-triangular Cholesky factor of the (slightly regularised) covariance, row-major.
    factor: Vec<f64>,
}

impl GaussianFaceModel {
    /// Fits mean and covariance to the templates. A ridge of 1e-4 × the mean variance is added to the diagonal so
    /// that fewer templates than dimensions still give a usable (if nearly flat in the unseen directions) model.
    pub fn fit(templates: &TemplateMatrix) -> Result<GaussianFaceModel, ProtocolError> {
        let (n, d) = (templates.len(), templates.dimension());
        if n < 2 {
            return Err(ProtocolError::TooFewTemplates { found: n });
        }
        let mut mean = vec![0f64; d];
        for row in templates.rows() {
            mean.iter_mut().zip(row).for_each(|(m, &x)| *m += f64::from(x));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut covariance = vec![0f64; d * d];
        let mut centred = vec![0f64; d];
        for row in templates.rows() {
            centred.iter_mut().zip(row).zip(&mean).for_each(|((c, &x), m)| *c = f64::from(x) - m);
            for i in 0..d {
                let ci = centred[i];
                for j in 0..=i {
                    covariance[i * d + j] += ci * centred[j];
                }
            }
        }
        let scale = 1.0 / (n as f64 - 1.0);
        let mean_variance = (0..d).map(|i| covariance[i * d + i] * scale).sum::<f64>() / d as f64;
        let ridge = 1e-4 * mean_variance.max(f64::MIN_POSITIVE);
        for i in 0..d {
            for j in 0..=i {
                covariance[i * d + j] *= scale;
            }
            covariance[i * d + i] += ridge;
        }
        let factor = cholesky(&covariance, d).ok_or(ProtocolError::DegenerateCovariance)?;
        Ok(GaussianFaceModel { dimension: d, mean, factor })
    }

    /// `count` unit-length samples, reproducible from `seed`.
    pub fn sample(&self, count: usize, seed: u64) -> TemplateMatrix {
        let d = self.dimension;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = TemplateMatrix { dimension: d, values: Vec::with_capacity(count * d) };
        let mut z = vec![0f64; d];
        let mut x = vec![0f32; d];
        let mut produced = 0;
        while produced < count {
            z.iter_mut().for_each(|v| *v = standard_normal(&mut rng));
            for (i, (xi, mean)) in x.iter_mut().zip(&self.mean).enumerate() {
                let row = &self.factor[i * d..i * d + i + 1];
                *xi = (mean + row.iter().zip(&z).map(|(l, zj)| l * zj).sum::<f64>()) as f32;
            }
            let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            // A zero-length sample has no direction; draw again (practically never happens).
            if norm.is_finite() && norm > 0.0 {
                out.values.extend(x.iter().map(|v| v / norm));
                produced += 1;
            }
        }
        out
    }
}

/// Lower-triangular Cholesky factor of a symmetric matrix given by its lower triangle; `None` when not positive
/// definite.
fn cholesky(lower: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let diagonal = lower[i * d + i] - sum;
                if !(diagonal > 0.0 && diagonal.is_finite()) {
                    return None;
                }
                l[i * d + i] = diagonal.sqrt();
            } else {
                l[i * d + j] = (lower[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// One draw of N(0, 1) by the Box–Muller transform.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // 1 - U lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_faces(name: &str) -> PathBuf {
        let dir = std::env::var_os("FACEMATCH_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"))
            .join("faces")
            .join(name);
        assert!(dir.is_dir(), "test data missing: {}", dir.display());
        dir
    }

    fn deepface() -> PhotoSet {
        PhotoSet::load(&shared_faces("deepface")).expect("deepface photo folder")
    }

    #[test]
    fn photo_sets_list_identity_folders_in_order() {
        let set = deepface();
        assert_eq!(set.photos.len(), 61);
        assert_eq!(set.by_identity().len(), 13);
        assert!(set.photos.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(set.name(), "deepface");
        let index = set.find("id01/img1.jpg").expect("id01/img1.jpg is listed");
        assert!(set.path(index).is_file());
        assert_eq!(set.find("id01/nope.jpg"), None);
    }

    #[test]
    fn csv_pairs_parse_with_their_header() {
        let set = deepface();
        let list = read_pairs(&set.root.join("pairs.csv"), &set).unwrap();
        assert_eq!(list.pairs.len(), 520);
        assert_eq!(list.source, PairSource::Csv);
        for pair in &list.pairs {
            let same = set.photos[pair.a].identity == set.photos[pair.b].identity;
            assert_eq!(pair.mated, same, "{pair:?}");
        }
    }

    #[test]
    fn lfw_pairs_parse_both_line_kinds_and_their_folds() {
        let set = PhotoSet::load(&shared_faces("lfw-dev")).unwrap();
        let text = "2\t1\nAbdullah_Gul\t1\t3\nAaron_Eckhart\t1\tAbdullah_Gul\t2\n\
                    Abdullah_Gul 2 4\nAJ_Cook 1 Abdullah_Gul 5\n";
        let list = parse_pairs(text, Path::new("pairs.txt"), &set).unwrap();
        assert_eq!(list.source, PairSource::LfwPairsTxt);
        assert_eq!(list.pairs.iter().map(|p| p.mated).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(list.folds, Some(vec![0, 0, 1, 1]));
        assert_eq!(set.photos[list.pairs[0].b].file, "Abdullah_Gul_0003.jpg");
        let missing = parse_pairs("Abdullah_Gul 1 99\n", Path::new("p.txt"), &set);
        assert!(matches!(missing, Err(ProtocolError::UnknownPhoto { line: 1, .. })));
        let garbled = parse_pairs("Abdullah_Gul one 2\n", Path::new("p.txt"), &set);
        assert!(matches!(garbled, Err(ProtocolError::BadPairLine { line: 1, .. })));
    }

    #[test]
    fn generated_pairs_hold_every_mated_pair_and_a_seeded_sample() {
        let set = deepface();
        let mated_expected: usize = set.by_identity().values().map(|p| p.len() * (p.len() - 1) / 2).sum();
        let list = generate_pairs(&set, 300, 7);
        let mated: Vec<_> = list.pairs.iter().filter(|p| p.mated).collect();
        let nonmated: Vec<_> = list.pairs.iter().filter(|p| !p.mated).collect();
        assert_eq!(mated.len(), mated_expected);
        assert_eq!(nonmated.len(), 300);
        assert!(nonmated.iter().all(|p| set.photos[p.a].identity != set.photos[p.b].identity));
        let unique: HashSet<_> = nonmated.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(unique.len(), 300);
        assert_eq!(generate_pairs(&set, 300, 7), list);
        assert_ne!(generate_pairs(&set, 300, 8), list);
        // Asking for more than exist yields all of them.
        let n = set.photos.len();
        let all = generate_pairs(&set, usize::MAX, 1);
        assert_eq!(all.pairs.len(), n * (n - 1) / 2);
    }

    #[test]
    fn open_set_protocol_assigns_every_photo_one_role() {
        let set = PhotoSet::load(&shared_faces("lfw-dev")).unwrap();
        let protocol = open_set_protocol(&set, |_| true);
        let groups = set.by_identity();
        let multi = groups.values().filter(|p| p.len() >= 2).count();
        let singles = groups.len() - multi;
        assert_eq!(protocol.enrolments.len(), multi);
        assert_eq!(protocol.distractors.len(), singles.div_ceil(2));
        assert_eq!(protocol.nonmated_probes.len(), singles / 2);
        let total = protocol.enrolments.len()
            + protocol.distractors.len()
            + protocol.mated_probes.len()
            + protocol.nonmated_probes.len();
        assert_eq!(total, set.photos.len());
        // Enrolments are the first photo of their identity.
        for &e in &protocol.enrolments {
            assert_eq!(groups[set.photos[e].identity.as_str()][0], e);
        }
        let restricted = open_set_protocol(&set, |id| id.starts_with('A'));
        assert!(restricted.gallery_size() < protocol.gallery_size());
        assert!(restricted
            .mated_probes
            .iter()
            .chain(&restricted.nonmated_probes)
            .all(|&p| set.photos[p].identity.starts_with('A')));
    }

    #[test]
    fn identity_split_is_seeded_disjoint_and_stratified() {
        let set = PhotoSet::load(&shared_faces("lfw-dev")).unwrap();
        let split = split_identities(&set, 1);
        assert!(split.tuning.is_disjoint(&split.test));
        assert_eq!(split.tuning.len() + split.test.len(), set.by_identity().len());
        let groups = set.by_identity();
        let multi = |half: &BTreeSet<String>| half.iter().filter(|id| groups[id.as_str()].len() >= 2).count();
        assert!(multi(&split.tuning).abs_diff(multi(&split.test)) <= 1);
        assert_eq!(split_identities(&set, 1), split);
        assert_ne!(split_identities(&set, 2), split);
    }

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn exact_search_ranks_and_counts_ties_against_the_mate() {
        let mut gallery = TemplateMatrix::new(2);
        for v in [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]] {
            gallery.push(&unit(&v)).unwrap();
        }
        assert!(gallery.push(&[1.0]).is_err());
        let result = search_exact(&gallery, &unit(&[1.0, 0.1]), 2, Some(2));
        assert_eq!(result.candidates.len(), 2);
        assert_eq!(result.candidates[0].row, 0);
        assert_eq!(result.candidates[1].row, 3);
        assert_eq!(result.mate_rank, Some(3));
        // Row 3 duplicates row 0: searching with the mate at row 3, the equal row 0 counts ahead of it.
        let tie = search_exact(&gallery, &unit(&[1.0, 0.0]), 10, Some(3));
        assert_eq!(tie.mate_rank, Some(2));
        assert_eq!(tie.candidates.len(), 4);
        assert!(tie.candidates.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(tie.others.is_some());
        let neighbours = template_neighbour_scores(&gallery, 2);
        assert_eq!(neighbours.len(), 4);
        // Row 0's nearest other row is its duplicate, row 3.
        assert!((neighbours[0][0] - 1.0).abs() < 1e-6);
        assert!(neighbours.iter().all(|n| n.len() == 2 && n[0] >= n[1]));
    }

    #[test]
    fn gaussian_distractors_follow_the_templates_and_the_seed() {
        let mut templates = TemplateMatrix::new(4);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Templates clustered around a common direction, as face embeddings are.
        for _ in 0..200 {
            let v: Vec<f32> =
                (0..4).map(|k| if k == 0 { 2.0 } else { 0.0 } + standard_normal(&mut rng) as f32).collect();
            templates.push(&unit(&v)).unwrap();
        }
        let model = GaussianFaceModel::fit(&templates).unwrap();
        let samples = model.sample(500, 11);
        assert_eq!(samples.len(), 500);
        assert!(samples.rows().all(|r| (r.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4));
        // The samples share the templates' common direction, unlike random unit vectors.
        let mean_first: f32 = samples.rows().map(|r| r[0]).sum::<f32>() / 500.0;
        assert!(mean_first > 0.5, "mean first coordinate {mean_first}");
        assert_eq!(model.sample(500, 11), samples);
        assert_ne!(model.sample(500, 12), samples);
        assert!(matches!(
            GaussianFaceModel::fit(&TemplateMatrix::new(4)),
            Err(ProtocolError::TooFewTemplates { found: 0 })
        ));
    }

    #[test]
    fn centring_removes_the_shared_direction() {
        let mut templates = TemplateMatrix::new(2);
        templates.push(&unit(&[1.0, 0.2])).unwrap();
        templates.push(&unit(&[1.0, -0.2])).unwrap();
        let mean = templates.mean().unwrap();
        assert!(mean[0] > 0.9 && mean[1].abs() < 1e-6);
        let centred = templates.centred(&mean);
        // Nearly parallel before, opposite after.
        assert!(dot(templates.row(0), templates.row(1)) > 0.9);
        assert!((dot(centred.row(0), centred.row(1)) + 1.0).abs() < 1e-5);
        assert_eq!(centre(&mean, &mean), vec![0.0, 0.0]);
        assert_eq!(TemplateMatrix::new(3).mean(), None);
    }

    #[test]
    fn cholesky_refuses_indefinite_matrices() {
        let l = cholesky(&[4.0, 0.0, 2.0, 5.0], 2).unwrap();
        assert_eq!(l, vec![2.0, 0.0, 1.0, 2.0]);
        assert!(cholesky(&[1.0, 0.0, 2.0, 1.0], 2).is_none());
    }
}
