//! The one error type of the codec: the input is not RESP.

/// Malformed input. Incomplete input is not an error (parsers return `Ok(None)` for it).
///
/// `Display` gives the text Redis sends for the same mistake, so a server replies with
/// `Frame::error("ERR", &err)` and then closes the connection, exactly as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*N` where N is not a decimal integer.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A request with more arguments than [`Limits::max_args`](crate::Limits) (the server's
    /// `max-args` setting): Redis's text, followed by the setting that refused it.
    #[error("Protocol error: invalid multibulk length: more than max-args ({max}) arguments")]
    TooManyArgs { max: usize },
    /// A `*N` line that has not ended within [`Limits::max_inline_len`](crate::Limits) bytes.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A multibulk request whose next argument is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", .got.escape_ascii())]
    ExpectedBulk { got: u8 },
    /// `$N` where N is not a decimal integer, or is negative.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// `$N` above [`Limits::max_bulk_len`](crate::Limits) (the server's `max-payload` setting).
    #[error("Protocol error: invalid bulk length: value is larger than max-payload ({max} bytes)")]
    BulkTooLarge { max: usize },
    /// A `$N` line that has not ended within [`Limits::max_inline_len`](crate::Limits) bytes.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// Bulk data not followed by CRLF. Redis skips those two bytes unread; we check them,
    /// because a client that got a length wrong would otherwise desynchronise silently.
    #[error("Protocol error: expected CRLF after bulk data")]
    MissingBulkTerminator,
    /// An inline command line longer than [`Limits::max_inline_len`](crate::Limits).
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// An inline command with an unterminated quote, or a closing quote followed by a non-space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A reply starting with a byte that is no RESP2/RESP3 type.
    #[error("Protocol error: unknown reply type '{}'", .got.escape_ascii())]
    UnknownReplyType { got: u8 },
    /// A reply of a known type whose content does not parse (`what` names the type).
    #[error("Protocol error: invalid {what} reply")]
    InvalidReply { what: &'static str },
    /// Aggregates nested deeper than [`MAX_REPLY_DEPTH`](crate::MAX_REPLY_DEPTH): refused so a
    /// hostile peer cannot overflow the parser's stack.
    #[error("Protocol error: reply nested deeper than {max} levels")]
    TooDeep { max: usize },
}
