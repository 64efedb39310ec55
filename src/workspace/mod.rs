//! Workspaces: a configuration checked and compiled ([`compile`]), checked and published as
//! `herald workspace apply` and the API do it ([`apply`]), the template engine of its rules
//! ([`templates`]), the connections found broken at run time ([`broken`]) and the live
//! table read from `herald.workspaces` ([`table`]). The format itself is in
//! [`crate::model::spec`].

pub mod apply;
pub mod broken;
pub mod compile;
pub mod table;
pub mod templates;
