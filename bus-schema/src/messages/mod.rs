//! Message bodies, version 1 of the schema. Types here are the wire format: components convert
//! them into their own types at the edge. Field order is part of the encoding (bincode), so new
//! fields go in a new schema version, never in the middle of an existing struct.

mod agent;
mod build;
mod deploy;
mod logs;

pub use agent::*;
pub use build::*;
pub use deploy::*;
pub use logs::*;
