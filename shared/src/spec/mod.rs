//! Provider specs: the format (model), reading it (load), compiling it (compile),
//! its templates, and the JSON Schema editors use.

pub mod compile;
pub mod compile_webhooks;
pub mod connect;
pub mod load;
pub mod model;
pub mod overrides;
pub mod schema;
pub mod template;
pub mod webhooks;

pub use compile::{load_spec, CompiledResource, CompiledSpec};
pub use load::{Problem, SpecError};
pub use overrides::{load_layered, OverlayError, Overrides};
