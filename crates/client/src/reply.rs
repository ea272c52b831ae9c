//! Reading reply frames into Rust values; a reply of the wrong shape is [`Error::Protocol`].

use bytes::Bytes;
use turnstile_resp::Frame;

use crate::error::{Error, Result};

pub(crate) fn integer(frame: Frame) -> Result<i64> {
    match frame {
        Frame::Integer(n) => Ok(n),
        other => Err(unexpected("an integer", &other)),
    }
}

pub(crate) fn unsigned(frame: Frame) -> Result<u64> {
    let n = integer(frame)?;
    u64::try_from(n).map_err(|_| Error::Protocol(format!("expected a count, got {n}")))
}

pub(crate) fn bulk(frame: Frame) -> Result<Bytes> {
    match frame {
        Frame::Bulk(bytes) => Ok(bytes),
        Frame::Simple(text) => Ok(Bytes::from(text)),
        other => Err(unexpected("a string", &other)),
    }
}

pub(crate) fn text(frame: Frame) -> Result<String> {
    let bytes = bulk(frame)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Protocol("expected UTF-8 text".into()))
}

/// An array, or `None` for a nil (RESP2 `*-1`, `$-1`, RESP3 `_`).
pub(crate) fn array_or_nil(frame: Frame) -> Result<Option<Vec<Frame>>> {
    match frame {
        Frame::Array(items) | Frame::Set(items) => Ok(Some(items)),
        Frame::Null | Frame::NullArray => Ok(None),
        other => Err(unexpected("an array", &other)),
    }
}

pub(crate) fn array(frame: Frame) -> Result<Vec<Frame>> {
    array_or_nil(frame)?.ok_or_else(|| Error::Protocol("expected an array, got nil".into()))
}

/// An array of exactly `N` items.
pub(crate) fn tuple<const N: usize>(frame: Frame) -> Result<[Frame; N]> {
    let items = array(frame)?;
    let len = items.len();
    items.try_into().map_err(|_| Error::Protocol(format!("expected {N} items, got {len}")))
}

/// A map: a RESP3 map, or RESP2's flat `[key, value, key, value, ...]` array.
pub fn map(frame: Frame) -> Result<Vec<(String, Frame)>> {
    match frame {
        Frame::Map(pairs) => pairs.into_iter().map(|(k, v)| Ok((text(k)?, v))).collect(),
        Frame::Array(items) if items.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((text(k)?, v));
            }
            Ok(pairs)
        }
        other => Err(unexpected("a map", &other)),
    }
}

/// Takes `key` out of a map reply.
pub(crate) fn field(pairs: &mut Vec<(String, Frame)>, key: &str) -> Result<Frame> {
    let at = pairs.iter().position(|(k, _)| k == key);
    let at = at.ok_or_else(|| Error::Protocol(format!("reply has no {key:?} field")))?;
    Ok(pairs.swap_remove(at).1)
}

fn unexpected(what: &str, got: &Frame) -> Error {
    Error::Protocol(format!("expected {what}, got {got:?}"))
}
