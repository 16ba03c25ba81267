//! Every error code the ingest API can send, with the status it goes with and where it can
//! appear: request level (`error.code`), per event (`results[i].error.code`), or both. This
//! table is the one list: statuses come from it, and a test checks that docs/api.md's two
//! tables and openapi.yaml's `RequestErrorCode` / `EventErrorCode` enums say the same.
//!
//! Codes are stable: clients branch on them. Add freely; rename or remove none.

/// Where a code can appear in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `error.code`: the request as a whole (nothing in it was accepted).
    Request,
    /// `results[i].error.code`: one event (a single-event request also carries it in `error`).
    Event,
    Both,
}

impl Scope {
    pub fn request(self) -> bool {
        matches!(self, Scope::Request | Scope::Both)
    }

    pub fn event(self) -> bool {
        matches!(self, Scope::Event | Scope::Both)
    }
}

macro_rules! codes {
    ($($variant:ident = $name:literal, $status:literal, $scope:ident;)*) => {
        /// A stable error code. See the module doc.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients see it (and as metrics label it).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// The status an answer with this code gets. `events_rejected` takes the events'
            /// common status instead when they share one (400, 413 or 415).
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// [`Code::status`] as a `StatusCode`.
            pub fn status_code(self) -> axum::http::StatusCode {
                axum::http::StatusCode::from_u16(self.status())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
            }

            pub const fn scope(self) -> Scope {
                match self {
                    $(Code::$variant => Scope::$scope,)*
                }
            }
        }
    };
}

codes! {
    // The body as a whole.
    MalformedJson = "malformed_json", 400, Both;
    EmptyBatch = "empty_batch", 400, Request;
    TooDeep = "too_deep", 400, Request;
    InvalidCompression = "invalid_compression", 400, Request;
    BodyReadFailed = "body_read_failed", 400, Request;
    EventsRejected = "events_rejected", 400, Request;
    BodyTimeout = "body_timeout", 408, Request;
    BodyTooLarge = "body_too_large", 413, Request;
    DecompressedTooLarge = "decompressed_too_large", 413, Request;
    TooManyEvents = "too_many_events", 413, Request;
    EventTooLarge = "event_too_large", 413, Both;
    HeadersTooLarge = "headers_too_large", 431, Request;
    UnsupportedMediaType = "unsupported_media_type", 415, Request;
    UnsupportedEncoding = "unsupported_encoding", 415, Request;
    // Capacity and delivery, for the whole request.
    SinkUnavailable = "sink_unavailable", 503, Request;
    SpoolFull = "spool_full", 503, Both;
    RateLimited = "rate_limited", 429, Request;
    Overloaded = "overloaded", 503, Request;
    // Authentication and authorization.
    MissingCredentials = "missing_credentials", 401, Request;
    ProtectedMode = "protected_mode", 401, Request;
    MalformedToken = "malformed_token", 401, Request;
    TokenTooLong = "token_too_long", 401, Request;
    AlgorithmNotAllowed = "algorithm_not_allowed", 401, Request;
    UnknownKey = "unknown_key", 401, Request;
    BadSignature = "bad_signature", 401, Request;
    TokenExpired = "token_expired", 401, Request;
    TokenNotYetValid = "token_not_yet_valid", 401, Request;
    WrongIssuer = "wrong_issuer", 401, Request;
    WrongAudience = "wrong_audience", 401, Request;
    MissingClaim = "missing_claim", 401, Request;
    InvalidClaim = "invalid_claim", 401, Request;
    InvalidApiKey = "invalid_api_key", 401, Request;
    ApiKeyExpired = "api_key_expired", 401, Request;
    InsufficientScope = "insufficient_scope", 403, Request;
    TenantNotRoutable = "tenant_not_routable", 403, Request;
    OriginNotAllowed = "origin_not_allowed", 403, Request;
    ClientCertificateNotAllowed = "client_certificate_not_allowed", 403, Request;
    AuthKeysUnavailable = "auth_keys_unavailable", 503, Request;
    // Routing and bugs.
    NotFound = "not_found", 404, Request;
    MethodNotAllowed = "method_not_allowed", 405, Request;
    Internal = "internal", 500, Request;
    // One event: its envelope.
    InvalidEvent = "invalid_event", 400, Event;
    MissingType = "missing_type", 400, Event;
    InvalidAttribute = "invalid_attribute", 400, Event;
    TooManyExtensions = "too_many_extensions", 400, Event;
    ReservedAttribute = "reserved_attribute", 400, Event;
    UnsupportedSpecversion = "unsupported_specversion", 400, Event;
    UnsupportedData = "unsupported_data", 415, Event;
    // One event: its type and schema.
    UnknownType = "unknown_type", 400, Event;
    TypeNotAllowed = "type_not_allowed", 403, Event;
    UnknownSchemaVersion = "unknown_schema_version", 400, Event;
    SchemaViolation = "schema_violation", 400, Event;
    // One event: its delivery.
    RecordTooLarge = "record_too_large", 413, Event;
    DeliveryTimeout = "delivery_timeout", 503, Event;
    SinkQueueFull = "sink_queue_full", 503, Event;
    DeliveryFailed = "delivery_failed", 503, Event;
    SinkUnauthorized = "sink_unauthorized", 503, Event;
    DeliveryRejected = "delivery_rejected", 500, Event;
    SpoolFailed = "spool_failed", 503, Event;
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So that tests and callers can compare with the code as written in the docs.
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
