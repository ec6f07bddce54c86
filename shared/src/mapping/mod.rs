//! From provider records to unified records: JSONata, the unified models, normalization.

mod analyze;
pub mod direct;
pub mod jsonata;
pub mod models;
pub mod normalize;
pub mod paths;
pub mod plan;
pub mod xml;
