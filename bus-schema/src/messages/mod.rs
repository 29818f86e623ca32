//! Message bodies, version 1 of the schema. Types here are the wire format: components convert
//! them into their own types at the edge. Field order is part of the encoding (bincode), so new
//! fields go in a new schema version, never in the middle of an existing struct.

/// Ties a message type to its wire [`Kind`](crate::envelope::Kind), whose variant bears the
/// type's name; `message!(Ask => Answer)` also makes it a request answered by `Answer`. Only
/// trait impls are generated: the structs, and so their encoding, stay as written.
macro_rules! message {
    ($ty:ident) => {
        impl $crate::envelope::Message for $ty {
            const KIND: $crate::envelope::Kind = $crate::envelope::Kind::$ty;
        }
    };
    ($ty:ident => $reply:ty) => {
        message!($ty);

        impl $crate::envelope::Request for $ty {
            type Reply = $reply;
        }
    };
}

mod agent;
mod build;
mod deploy;
mod logs;

pub use agent::*;
pub use build::*;
pub use deploy::*;
pub use logs::*;
