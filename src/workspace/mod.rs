//! Workspaces: the configuration format ([`spec`]), `${env:…}` references ([`interpolate`]),
//! compiled rules and templates ([`compile`]) and the live table read from `herald.workspaces`
//! ([`table`]).

pub mod compile;
pub mod interpolate;
pub mod spec;
pub mod table;
