//! Where rate budgets are kept (a setting the sync layer acts on).

use super::named_enum;

/// Where rate budgets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerChoice {
    /// The state store when it is PostgreSQL (shared by a fleet), memory on SQLite (one process).
    #[default]
    Auto,
    Store,
    Memory,
}

named_enum!(LedgerChoice, "rate budget ledger", {
    Auto => "auto",
    Store => "store",
    Memory => "memory",
});
