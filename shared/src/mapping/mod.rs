//! From provider records to unified records: JSONata, the unified models, normalization.

pub mod jsonata;
pub mod models;
pub mod normalize;
