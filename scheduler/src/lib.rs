//! The scheduler's control API as a library, so tests serve it in-process on a store and
//! a broker of their own; the binary (`main.rs`) serves the same router.

pub mod api;
