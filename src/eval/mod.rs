//! Evaluation harness: biometric metrics, figures and reports (NIST FRTE / ISO/IEC 19795-1 vocabulary).
//!
//! Everything here is a pure function of scores handed in by callers; the face pipeline lives elsewhere.
//! [`metrics`] computes rates from scored pairs and search outcomes, [`plot`] draws them, [`report`] gathers
//! tables and figures with run provenance ([`machine`]) into terminal, JSON, Markdown and HTML renderings.
//! [`protocol`] fixes which photos are compared or searched against which. The statistics open-set identification
//! thresholds, the calibration tables and the per-comparison impostor rates live one layer down, in
//! [`crate::score`], because the service reads them too.

pub mod index_report;
pub mod machine;
pub mod metrics;
pub mod plot;
pub mod protocol;
pub mod report;
