//! The palisade agent's local API: newline-delimited JSON over a unix socket.
//!
//! One request per connection: the client writes one [`Request`] as a JSON
//! line, the agent answers with one [`Response`] line, except for
//! [`Request::Flows`] with `follow`, which streams one [`Response::Flow`]
//! line per event until the client hangs up. The socket is root-only (0600):
//! whoever can talk to it controls policy on this node.

#![forbid(unsafe_code)]

mod client;
pub mod events;
mod types;

pub use client::{Client, ClientError};
pub use types::*;
