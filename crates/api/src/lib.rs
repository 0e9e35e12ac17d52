//! The daemon's HTTP API `/api/v1` as its clients see it: the JSON wire types ([`wire`]) and
//! the one typed client ([`Client`]) that the CLI and the DRT runner call it with.
//!
//! The server (crate `server`) answers with these types, converted from model and store
//! types at its edge; clients read them. This crate knows no store, engine or monitor.

mod client;
pub mod wire;

pub use client::{
    read_token, Client, ClientError, EventFilter, OperationFilter, Reply, OPERATION_TIMEOUT,
    TIMEOUT,
};
