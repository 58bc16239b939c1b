//! The watchlist service core shared by the HTTP edge and the CLI: enrollment, search and verification over the
//! gallery, the ANN index and the face pipeline.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Gallery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GalleryConfig {
    /// Data directory holding the SQLite store of record and the ANN index file (default `data/`).
    pub data_dir: PathBuf,
}

impl Default for GalleryConfig {
    fn default() -> Self {
        GalleryConfig { data_dir: PathBuf::from("data") }
    }
}
