//! Talking to providers: which hosts, which credentials, how long to wait, how much budget.

pub mod auth;
pub mod guard;
pub mod oauth1;
pub mod wait;
