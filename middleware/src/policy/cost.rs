//! What one request costs.

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::request::Parts;

/// A function computing a request's cost.
pub type CostFn = Arc<dyn Fn(&Parts) -> Result<u64, CostError> + Send + Sync>;

/// The cost of a request: how many units it takes from every limit of its policy.
#[derive(Clone)]
#[non_exhaustive]
pub enum Cost {
    /// The same cost for every request (default 1).
    Fixed(u64),
    /// Read from a header; `default` when absent; more than `max` or not a whole
    /// number is a bad request (400).
    Header {
        /// The header carrying the cost.
        name: HeaderName,
        /// The cost of a request without the header.
        default: u64,
        /// The highest cost a client may claim.
        max: u64,
    },
    /// Computed by a function of the request head.
    Fn(CostFn),
}

impl Default for Cost {
    fn default() -> Self {
        Cost::Fixed(1)
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cost::Fixed(n) => write!(f, "Fixed({n})"),
            Cost::Header { name, default, max } => {
                write!(f, "Header({name}, default={default}, max={max})")
            }
            Cost::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl Cost {
    /// Cost from header `name` (see [`Cost::Header`]).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name: a constant in code. For a name from
    /// configuration or any other input, use [`Cost::try_header`].
    pub fn header(name: &str, default: u64, max: u64) -> Self {
        Cost::try_header(name, default, max).expect("a valid header name, as documented")
    }

    /// Cost from header `name` (see [`Cost::Header`]), for names from configuration.
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`](crate::key::InvalidHeaderName) when `name` is not a valid
    /// header name.
    pub fn try_header(
        name: &str,
        default: u64,
        max: u64,
    ) -> Result<Self, crate::key::InvalidHeaderName> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| crate::key::InvalidHeaderName(name.to_owned()))?;
        Ok(Cost::Header { name, default, max })
    }

    /// Cost computed by `f`.
    pub fn from_fn(f: impl Fn(&Parts) -> Result<u64, CostError> + Send + Sync + 'static) -> Self {
        Cost::Fn(Arc::new(f))
    }

    /// The cost of this request.
    ///
    /// # Errors
    ///
    /// [`CostError`] when the request states an invalid cost.
    pub fn of(&self, request: &Parts) -> Result<u64, CostError> {
        match self {
            Cost::Fixed(n) => Ok(*n),
            Cost::Header { name, default, max } => match request.headers.get(name) {
                None => Ok(*default),
                Some(value) => {
                    let cost = value
                        .to_str()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| CostError::NotANumber {
                            header: name.as_str().to_owned(),
                        })?;
                    if cost > *max {
                        return Err(CostError::TooHigh {
                            header: name.as_str().to_owned(),
                            max: *max,
                        });
                    }
                    Ok(cost)
                }
            },
            Cost::Fn(f) => f(request),
        }
    }
}

/// A request whose cost is invalid; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The cost header is not a whole number.
    #[error("{header} must be a whole number")]
    NotANumber {
        /// The header.
        header: String,
    },
    /// The cost header claims more than the policy allows.
    #[error("{header} must be at most {max}")]
    TooHigh {
        /// The header.
        header: String,
        /// The highest cost allowed.
        max: u64,
    },
    /// A cost function refused the request, for this reason.
    #[error("{0}")]
    Invalid(String),
}
