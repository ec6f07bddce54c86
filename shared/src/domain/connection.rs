//! The state a connection shows (stored in `connections.state`, returned by the API).

use super::named_enum;

/// What a connection is doing. `Syncing` and `Error` are what the API derives from a
/// healthy connection's runs (one running; the latest failed); the others are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Healthy,
    Syncing,
    /// Jobs wait for the provider's throttle or a spent budget (`blocked_until`).
    RateLimited,
    /// The provider refused the credentials: nothing runs until they are replaced.
    NeedsReauth,
    /// Paused by the host or the tenant: nothing runs until resumed.
    Paused,
    Error,
}

named_enum!(ConnectionState, "connection state", {
    Healthy => "healthy",
    Syncing => "syncing",
    RateLimited => "rate_limited",
    NeedsReauth => "needs_reauth",
    Paused => "paused",
    Error => "error",
});

impl ConnectionState {
    /// States in which the connection's jobs are neither scheduled nor run.
    pub const HALTED: [ConnectionState; 2] =
        [ConnectionState::Paused, ConnectionState::NeedsReauth];

    /// Paused or waiting for new credentials: its jobs are skipped, not scheduled.
    pub fn is_halted(self) -> bool {
        Self::HALTED.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_api_names() {
        let names: Vec<&str> = ConnectionState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "healthy",
                "syncing",
                "rate_limited",
                "needs_reauth",
                "paused",
                "error"
            ]
        );
        for s in ConnectionState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<ConnectionState>(), Ok(*s));
        }
        assert!(ConnectionState::Paused.is_halted() && !ConnectionState::RateLimited.is_halted());
    }
}
