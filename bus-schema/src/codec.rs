//! The wire codec: the only module that knows the bytes are bincode.
//!
//! Every message on the bus is `header ++ bincode(envelope)`. The header is six bytes: the magic
//! `DS`, the schema version (u16, big-endian) and the message kind (u16, big-endian). The header
//! lets a receiver refuse a message from a newer schema, or a message of the wrong type on a
//! subject, with a clear error before it reads the body. Swapping bincode for another format is a
//! change to this file alone.

use serde::{Serialize, de::DeserializeOwned};

use crate::envelope::{Envelope, Kind, Message};

/// The schema version this build writes and reads. Bump it when an encoding changes on purpose,
/// and keep the old one decodable beside it (see the golden tests).
pub const SCHEMA_VERSION: u16 = 1;

/// The first two bytes of every message.
pub const MAGIC: [u8; 2] = *b"DS";

/// Size of the header in front of the body.
pub const HEADER_LEN: usize = 6;

/// Messages above this size are refused: it bounds what a malformed length prefix can allocate.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Why bytes could not be decoded (or a value could not be encoded).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("message does not start with the bus magic bytes (found {0:02x?})")]
    BadMagic([u8; 2]),
    #[error("message has schema version {found}; this build reads version {SCHEMA_VERSION}")]
    UnsupportedVersion { found: u16 },
    #[error("expected a {expected} message, found kind {found}")]
    WrongKind { expected: Kind, found: u16 },
    #[error("message is {0} bytes, above the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed {kind} message body: {reason}")]
    Body { kind: Kind, reason: String },
    #[error("{kind} message has {extra} unexpected bytes after its body")]
    TrailingBytes { kind: Kind, extra: usize },
    #[error("could not encode {kind} message: {reason}")]
    Encode { kind: Kind, reason: String },
    #[error("malformed JSON drain record: {0}")]
    Json(#[from] serde_json::Error),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes an envelope with its header.
pub fn encode<M: Message>(envelope: &Envelope<M>) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    out.extend_from_slice(&(M::KIND as u16).to_be_bytes());
    encode_body(envelope, &mut out).map_err(|reason| CodecError::Encode { kind: M::KIND, reason })?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(out.len()));
    }
    Ok(out)
}

/// How many bytes a value takes inside a message body: for cutting a reply into pages that fit
/// the bus's payload limit.
pub fn body_len<T: Serialize>(value: &T) -> Result<usize, String> {
    bincode::serde::encode_to_vec(value, config()).map(|v| v.len()).map_err(|e| e.to_string())
}

fn encode_body<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    Ok(())
}

/// Reads the header alone: the schema version and message kind, without decoding the body.
pub fn peek_kind(bytes: &[u8]) -> Result<u16, CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort(bytes.len()));
    }
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(CodecError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([bytes[2], bytes[3]]);
    if version != SCHEMA_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    Ok(u16::from_be_bytes([bytes[4], bytes[5]]))
}

/// Decodes an envelope of message type `M`. Never panics, whatever the bytes.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<Envelope<M>, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let kind = peek_kind(bytes)?;
    if kind != M::KIND as u16 {
        return Err(CodecError::WrongKind { expected: M::KIND, found: kind });
    }
    let body = &bytes[HEADER_LEN..];
    let (value, used) =
        decode_body::<Envelope<M>>(body).map_err(|reason| CodecError::Body { kind: M::KIND, reason })?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes { kind: M::KIND, extra: body.len() - used });
    }
    Ok(value)
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), String> {
    bincode::serde::decode_from_slice(body, config()).map_err(|e| e.to_string())
}
