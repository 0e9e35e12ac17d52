//! The daemon's HTTP API `/api/v1` as its clients see it: the JSON wire types ([`wire`]).
//!
//! The server (crate `server`) answers with these types, converted from model and store
//! types at its edge; clients read them. This crate knows no store, engine or monitor.

pub mod wire;
