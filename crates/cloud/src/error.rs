/// What can go wrong finding credentials or using them. Every variant names where it
/// comes from: a setting or file of this machine, or a credentials service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or file holds credentials that cannot be used. `what` names it (``the
    /// Google credentials file `/path` ``, `` `AWS_ENDPOINT_URL` ``); `reason` says why.
    #[error("{what} {reason}")]
    Unusable { what: String, reason: String },

    /// A credentials service refused: `detail` says what was asked and its words.
    #[error("The credentials service `{service}` refused: {detail}")]
    Refused { service: String, detail: String },

    /// A credentials service could not be reached.
    #[error("Cannot reach the credentials service at `{url}`")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// A credentials service answered something that is not credentials.
    #[error("The credentials service `{service}` sent an invalid answer: {reason}")]
    Protocol { service: String, reason: String },
}

impl Error {
    pub(crate) fn unusable(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unusable {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Whether the service could not be asked at all, as opposed to having answered.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}
