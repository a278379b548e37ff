//! The wire types generated from `proto/control.proto` (package `switchboard.control.v1`).
//!
//! Public so that operators can write their own agents or consoles (and tests their own
//! hostile peers) against exactly the contract the binary speaks.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("switchboard.control.v1");
