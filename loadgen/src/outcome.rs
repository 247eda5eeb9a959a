//! How one request ended, and the rule that classifies HTTP statuses.
//!
//! 200 (any 2xx) and 429 are both *success*: the limiter answered, one way or the other. 429
//! is additionally *blocked*. Everything else — another status, a refused connection, a
//! timeout, a broken response, or a request never sent because too many were in flight — is
//! *failed*, with a [`FailReason`] saying which.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The result of one scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the request was admitted.
    Admitted,
    /// 429: the limiter denied the request (still a success: it answered correctly).
    Blocked,
    /// No usable answer.
    Failed(FailReason),
}

/// Why a request counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The TCP connection could not be made (refused, unreachable).
    Connect,
    /// No complete response within `REQUEST_TIMEOUT_MS`.
    Timeout,
    /// A status other than 2xx or 429.
    Status,
    /// The connection broke or the response was malformed.
    Protocol,
    /// Not sent: `MAX_IN_FLIGHT` requests were already outstanding.
    Overload,
    /// Still in flight when the drain after a stop ran out of time.
    Aborted,
}

impl FailReason {
    /// All reasons, in report order.
    pub const ALL: [FailReason; 6] = [
        FailReason::Connect,
        FailReason::Timeout,
        FailReason::Status,
        FailReason::Protocol,
        FailReason::Overload,
        FailReason::Aborted,
    ];

    /// The reason's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FailReason::Connect => "connect",
            FailReason::Timeout => "timeout",
            FailReason::Status => "status",
            FailReason::Protocol => "protocol",
            FailReason::Overload => "overload",
            FailReason::Aborted => "aborted",
        }
    }

    /// Dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Classifies a complete response by its status.
pub fn classify(status: StatusCode) -> Outcome {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Blocked
    } else if status.is_success() {
        Outcome::Admitted
    } else {
        Outcome::Failed(FailReason::Status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_documented() {
        assert_eq!(classify(StatusCode::OK), Outcome::Admitted);
        assert_eq!(classify(StatusCode::NO_CONTENT), Outcome::Admitted);
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Outcome::Blocked);
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Failed(FailReason::Status)
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST),
            Outcome::Failed(FailReason::Status)
        );
        assert_eq!(
            classify(StatusCode::MOVED_PERMANENTLY),
            Outcome::Failed(FailReason::Status)
        );
    }

    #[test]
    fn indices_are_dense() {
        for (i, r) in FailReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
