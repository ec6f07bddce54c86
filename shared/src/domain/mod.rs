//! The vocabulary the layers share: run modes, statuses and counts, connection states,
//! record fingerprints, where a run is in the pages, where budgets live, and the one text
//! form of instants. `store`, `bus`, `changes`, `engine`, `config` and `sync` depend on this
//! module; it depends on none of them (only on serde and chrono).

mod budgets;
mod connection;
mod fingerprint;
mod page;
mod run;
pub mod schema;
pub mod time;

pub use budgets::LedgerChoice;
pub use connection::ConnectionState;
pub use fingerprint::StoredFingerprint;
pub use page::{Captured, PageState};
pub use run::{RunCounts, RunMode, RunStatus};
pub use schema::{FieldDef, FieldType, Schema, SchemaChange};

/// A stored or configured name that is not one of a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what}; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// `as_str`, `FromStr`, `TryFrom<String>`, `Display` and serde, all on one table of names,
/// so the stored strings, the API's strings and the Rust names never drift apart.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stored (and serialized) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::domain::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err($crate::domain::UnknownName {
                        what: $what,
                        value: other.to_string(),
                        expected: concat!($($name, ", "),+).trim_end_matches(", "),
                    }),
                }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = $crate::domain::UnknownName;
            fn try_from(s: String) -> Result<Self, $crate::domain::UnknownName> {
                s.parse()
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use named_enum;
