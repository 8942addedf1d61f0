//! Shell: the files edgeplan writes and reads beyond the instance — the
//! operator and replay reports (HTML with SVG charts), result tables (Parquet, CSV,
//! JSON) and the telemetry archive (Parquet).

pub mod archive;
pub mod basemap;
pub mod operator_report;
pub mod replay_report;
pub mod tables;
