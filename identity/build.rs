//! Generates the SPIFFE Workload API messages and gRPC service from
//! `proto/workload.proto` with `protoc` (which must be installed).
//!
//! `proto/node_ca.proto`, the node CA service, is compiled with its server
//! and client into the library (`node_ca::proto`).
//!
//! Two outputs of the Workload API go to `OUT_DIR`:
//! - `_.rs`: the messages and the server, compiled into the library
//!   (`workload_api::proto`). Messages that carry secrets (a private key,
//!   a JWT-SVID) get no derived `Debug`; the library writes one that hides them.
//! - `client/_.rs`: the messages and a client, for the integration tests
//!   only (`tests/workload_api.rs` includes it), so the library ships no
//!   client and the tests decode with types of their own.

use std::env;
use std::error::Error;
use std::fs;
use std::path::PathBuf;

/// Messages whose derived `Debug` would print a private key or a token.
const SECRET_MESSAGES: [&str; 3] = [".X509SVID", ".JWTSVID", ".ValidateJWTSVIDRequest"];

fn main() -> Result<(), Box<dyn Error>> {
    let proto = "proto/workload.proto";
    let includes = ["proto"];
    println!("cargo:rerun-if-changed=build.rs");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .skip_debug(SECRET_MESSAGES)
        .compile_protos(&[proto], &includes)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/node_ca.proto"], &includes)?;

    let client_dir = PathBuf::from(env::var("OUT_DIR")?).join("client");
    fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(client_dir)
        .compile_protos(&[proto], &includes)?;
    Ok(())
}
