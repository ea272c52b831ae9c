//! Reply codes and the errors that close a channel or the whole connection, with RabbitMQ's
//! texts (clients and people match on them).

/// AMQP 0-9-1 reply codes.
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;

    /// The name RabbitMQ puts before the text (`NOT_FOUND - no queue 'q' in vhost '/'`).
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            _ => "INTERNAL_ERROR",
        }
    }
}

/// Whether an error ends one channel or the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// An error to report with `Channel.Close` or `Connection.Close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text}", code::name(*.code))]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    /// The method that failed (0, 0 when none).
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<String>) -> AmqpError {
        AmqpError { code, text: text.into(), class_id: 0, method_id: 0 }
    }

    /// Names the method that failed.
    pub fn on(mut self, class_id: u16, method_id: u16) -> AmqpError {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The spec's split: 3xx/4xx are soft (channel) errors, 5xx hard (connection) errors.
    pub fn scope(&self) -> Scope {
        if self.code >= 500 { Scope::Connection } else { Scope::Channel }
    }

    /// The reply text as RabbitMQ words it: the code's name, a dash, the message; at most 255 bytes.
    pub fn reply_text(&self) -> String {
        let mut text = format!("{} - {}", code::name(self.code), self.text);
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }

    pub fn not_found(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::NOT_FOUND, text)
    }
    pub fn precondition(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::PRECONDITION_FAILED, text)
    }
    pub fn access_refused(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::ACCESS_REFUSED, text)
    }
    pub fn command_invalid(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::COMMAND_INVALID, text)
    }
    pub fn channel_error(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::CHANNEL_ERROR, text)
    }
    pub fn unexpected_frame(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::UNEXPECTED_FRAME, text)
    }
    pub fn not_implemented(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::NOT_IMPLEMENTED, text)
    }
    pub fn internal(text: impl Into<String>) -> AmqpError {
        AmqpError::new(code::INTERNAL_ERROR, text)
    }
}

impl From<&crate::frame::FrameError> for AmqpError {
    fn from(e: &crate::frame::FrameError) -> AmqpError {
        use crate::frame::FrameError as F;
        match e {
            F::UnknownMethod { class_id, method_id, .. } => {
                AmqpError::not_implemented(format!("unknown method {class_id}.{method_id}"))
                    .on(*class_id, *method_id)
            }
            F::Malformed { .. } => AmqpError::new(code::SYNTAX_ERROR, e.to_string()),
            _ => AmqpError::new(code::FRAME_ERROR, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_scopes_follow_rabbitmq() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'").on(50, 10);
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.scope(), Scope::Channel);
        assert_eq!(AmqpError::channel_error("x").scope(), Scope::Connection);
        let long = AmqpError::precondition("é".repeat(200));
        assert!(long.reply_text().len() <= 255);
    }
}
