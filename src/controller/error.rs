//! Errors of a reconcile. Each variant names the action that failed; `reason()` is a stable
//! PascalCase label for conditions, Events and metrics. None of them carries credential material:
//! API errors quote object names and the server's message, and the server redacts Secret data.

use crate::{controller::resolve::SourceError, controller::targets::SelectorError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Source(#[from] SourceError),

    #[error(transparent)]
    Selector(#[from] SelectorError),

    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("finalizer of RegistryCredential {name}: {message}")]
    Finalizer { name: String, message: String },

    #[error("{message}")]
    Contested { message: String },

    #[error("RegistryCredential has no {0}")]
    MissingField(&'static str),
}

impl Error {
    pub(crate) fn api(
        action: &'static str,
        kind: &'static str,
        namespace: &str,
        name: &str,
        source: kube::Error,
    ) -> Self {
        Error::Api {
            action,
            kind,
            namespace: namespace.into(),
            name: name.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Source(e) => e.reason(),
            Error::Selector(_) => "InvalidSelector",
            Error::Api { source, .. } => api_reason(source),
            Error::Finalizer { .. } => "FinalizerFailed",
            Error::Contested { .. } => crate::controller::contests::REASON,
            Error::MissingField(_) => "InvalidObject",
        }
    }

    /// A configuration error waits for the object (or its source) to change instead of retrying.
    pub(crate) fn is_configuration(&self) -> bool {
        matches!(self, Error::Source(_) | Error::Selector(_))
    }
}

impl crate::writes::Conflict for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { source, .. } if source.is_conflict())
    }
}

/// Status code of an API error, if the server answered.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The server's message of an API error (it never quotes Secret data), or the error itself.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => other.to_string(),
    }
}

fn api_reason(e: &kube::Error) -> &'static str {
    match status_code(e) {
        Some(403) => "Forbidden",
        Some(409) => "WriteConflict",
        Some(422) => "Rejected",
        Some(429) => "Throttled",
        Some(_) => "ApiError",
        None => "ApiUnreachable",
    }
}

/// A write refused because the namespace is being deleted: such namespaces are skipped quietly.
pub(crate) fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}
